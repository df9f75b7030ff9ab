"""The window sensor's cursor shared with the daemon, whatever folder the pipeline runs from."""

import json

from qraft_dagster.execute import (
    CODE_LOCATION,
    daemon_workspace,
    open_instance,
    store_cursor,
    stored_cursor,
)


def test_the_cursor_is_shared_through_the_dagster_homes_workspace_from_another_folder(tmp_path, monkeypatch):
    # `qraft up` run outside the project writes its workspace file into the Dagster home.
    home, elsewhere = tmp_path / "dagster_home", tmp_path / "data"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = open_instance(home)
    try:
        assert daemon_workspace(instance) == home / "workspace.yaml"
        assert store_cursor(instance, '{"next": 1}') == 0  # no workspace file: no daemon to share with
        assert stored_cursor(instance) is None
        (home / "workspace.yaml").write_text(json.dumps(CODE_LOCATION))
        assert store_cursor(instance, '{"next": 2}') == 1
        assert stored_cursor(instance) == '{"next": 2}'
    finally:
        instance.dispose()


def test_the_current_folders_workspace_wins(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    (tmp_path / "workspace.yaml").write_text(json.dumps(CODE_LOCATION))
    instance = open_instance(home)
    try:
        assert daemon_workspace(instance).resolve() == (tmp_path / "workspace.yaml").resolve()
    finally:
        instance.dispose()
