from qraft_dagster.cli import main

main()
