from qraft_cli import main

main()
