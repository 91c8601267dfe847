"""drover's own state: private folders and files, checked cluster names, the remembered spec
and its previous copy, and databases that are refused (named, with a fix) when damaged."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from drover.deploy import prepare_cluster_dir
from drover.errors import InvalidName, SecretsMissing, StateError
from drover.files import write_private
from drover.health import FailureLog
from drover.home import (
    cluster_dir,
    drover_home,
    forget_cluster,
    recall_spec,
    remember_spec,
    remembered_spec,
)
from drover.lab.store import LabStore
from drover.timing import History


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- folders and names -----------------------------------------------------------------------

def test_home_and_cluster_folders_are_made_0700(isolated_home, monkeypatch):
    monkeypatch.setenv("DROVER_HOME", str(isolated_home / "fresh"))
    folder = cluster_dir("lab")
    assert [mode(p) for p in (drover_home(), drover_home() / "clusters", folder)] == [0o700] * 3


@pytest.mark.parametrize("which", ["home", "clusters", "cluster"])
def test_a_state_folder_open_to_others_is_refused_with_the_chmod_fix(isolated_home, which):
    folder = cluster_dir("lab")
    target = {"home": isolated_home, "clusters": folder.parent, "cluster": folder}[which]
    target.chmod(0o755)
    with pytest.raises(StateError, match=f"mode 0755 lets other users in.*chmod 700 {target}"):
        cluster_dir("lab")


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "", "Lab", "lab_1", "-lab",
                                  "x" * 41, "lab\n"])
def test_names_that_could_leave_the_clusters_folder_are_refused(name):
    for use in (cluster_dir, remembered_spec, recall_spec, forget_cluster):
        with pytest.raises(InvalidName, match="cluster name"):
            use(name)


def test_destroying_a_name_with_dots_removes_nothing_outside(isolated_home, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "keep").write_text("x")
    with pytest.raises(InvalidName):
        forget_cluster(f"../../../../../../{outside}")
    assert (outside / "keep").exists()


def test_forget_cluster_refuses_a_cluster_folder_that_is_a_symlink(tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "keep").write_text("x")
    (drover_home() / "clusters").mkdir(mode=0o700)
    (drover_home() / "clusters" / "lab").symlink_to(elsewhere)
    with pytest.raises(InvalidName, match="plain folder"):
        forget_cluster("lab")
    assert (elsewhere / "keep").exists()


def test_forget_cluster_removes_only_that_cluster(make_spec):
    remember_spec(make_spec(name="a"))
    remember_spec(make_spec(name="b"))
    forget_cluster("a")
    forget_cluster("a")  # already gone: nothing to do
    assert not (drover_home() / "clusters" / "a").exists()
    assert remembered_spec("b") == make_spec(name="b")


# --- secrets of a deployed cluster -----------------------------------------------------------

def test_a_redeploy_after_secrets_yaml_was_deleted_stops_and_keeps_the_client_configs(make_spec):
    spec = make_spec()
    prepare_cluster_dir(spec)
    folder = cluster_dir(spec.name)
    kubeconfig = (folder / "kubeconfig").read_text()
    (folder / "secrets.yaml").unlink()

    scaled_up = make_spec(workers=4)
    for nodes_exist in (False, True):
        with pytest.raises(SecretsMissing, match="drover secrets restore lab BACKUP"):
            prepare_cluster_dir(scaled_up, nodes_exist=nodes_exist)
    assert not (folder / "secrets.yaml").exists()
    assert (folder / "kubeconfig").read_text() == kubeconfig


def test_first_deploy_makes_the_secrets_0600(make_spec):
    prepare_cluster_dir(make_spec())
    folder = cluster_dir("lab")
    assert {p.name: mode(p) for p in folder.iterdir()} == {
        "secrets.yaml": 0o600, "cluster.json": 0o600, "kubeconfig": 0o600}


# --- the remembered spec ---------------------------------------------------------------------

def test_remember_spec_keeps_the_previous_version_privately(make_spec):
    first, second = make_spec(workers=2), make_spec(workers=3)
    remember_spec(first)
    remember_spec(first)  # the same spec again: no previous copy of itself
    assert not (cluster_dir("lab") / "cluster.json.prev").exists()
    remember_spec(second)

    previous = cluster_dir("lab") / "cluster.json.prev"
    assert mode(previous) == 0o600
    assert remembered_spec("lab") == second
    (cluster_dir("lab") / "cluster.json").write_text("{broken")
    assert recall_spec("lab").spec == first


def test_a_damaged_remembered_spec_is_named_with_both_recoveries_and_not_quoted(make_spec):
    remember_spec(make_spec(workers=2))
    remember_spec(make_spec(workers=3))
    path = cluster_dir("lab") / "cluster.json"
    write_private(path, '{"apiVersion": "hunter2-secret-value"}')

    with pytest.raises(StateError) as caught:
        remembered_spec("lab")
    message = str(caught.value)
    assert message.startswith(f"{path}: damaged (")
    assert f"cp {path}.prev {path}" in message and "drover apply CONFIG" in message
    assert "hunter2" not in message


def test_recall_spec_falls_back_to_the_previous_copy_with_a_warning(make_spec):
    remember_spec(make_spec(workers=2))
    remember_spec(make_spec(workers=3))
    write_private(cluster_dir("lab") / "cluster.json", "not json")

    recalled = recall_spec("lab")

    assert recalled.spec == make_spec(workers=2)
    assert recalled.warning and "cluster.json.prev" in recalled.warning


def test_recall_spec_without_a_readable_copy_raises_naming_the_file(make_spec):
    remember_spec(make_spec())
    write_private(cluster_dir("lab") / "cluster.json", "not json")
    with pytest.raises(StateError, match=r"cluster.json: damaged.*drover apply CONFIG"):
        recall_spec("lab")
    assert recall_spec("unknown").spec is None
    assert remembered_spec("unknown") is None


def test_a_remembered_spec_open_to_others_is_refused(make_spec):
    remember_spec(make_spec())
    (cluster_dir("lab") / "cluster.json").chmod(0o644)
    with pytest.raises(StateError, match="chmod 600"):
        remembered_spec("lab")


# --- databases -------------------------------------------------------------------------------

def test_a_new_lab_file_is_0600_and_is_recognised_on_the_next_open(tmp_path):
    path = tmp_path / "state" / "lab.db"
    LabStore(path)
    assert (mode(path.parent), mode(path)) == (0o700, 0o600)
    assert path.stat().st_size > 0
    LabStore(path)  # WAL mode and the tables: recognised as drover's
    assert sorted(p.name for p in path.parent.iterdir()) == ["lab.db"]  # no temp file left


@pytest.mark.parametrize("content, problem", [
    (b"", "is empty: restore it, or delete it to start an empty lab; every lab cluster in it "
          "is then forgotten"),
    ("foreign", "holds no drover lab"),
    (b"SQLite format 3\0" + b"\xff" * 200, "cannot be read as a drover database"),
    (b"this is not a database at all" * 100, "cannot be read as a drover database"),
])
def test_an_existing_lab_file_that_is_not_a_lab_is_refused_never_rebuilt(tmp_path, content,
                                                                         problem):
    path = tmp_path / "lab.db"
    if content == "foreign":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE accounts (id INTEGER)")
        con.commit()
        con.close()
    else:
        path.write_bytes(content)
    path.chmod(0o600)
    before = path.read_bytes()

    with pytest.raises(StateError, match=problem) as caught:
        LabStore(path)
    assert str(caught.value).startswith(str(path))
    assert path.read_bytes() == before


def test_a_lab_file_open_to_others_is_refused(tmp_path):
    path = tmp_path / "lab.db"
    LabStore(path)
    path.chmod(0o644)
    with pytest.raises(StateError, match=f"chmod 600 {path}"):
        LabStore(path)


@pytest.mark.parametrize("open_db", [History, FailureLog])
def test_other_databases_are_0600_and_name_themselves_when_damaged(tmp_path, open_db):
    path = tmp_path / "state.db"
    open_db(path)
    assert mode(path) == 0o600
    path.write_bytes(b"garbage, not sqlite" * 200)
    with pytest.raises(StateError, match=f"^{path}: cannot be read as a drover database.*"
                                         "restore it from a backup"):
        open_db(path)
