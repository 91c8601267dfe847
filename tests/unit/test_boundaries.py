"""Names and paths at drover's edges: cluster and node names are DNS labels that cannot spell a
path; files read on someone's behalf stay inside their folder, symlinks included."""

from __future__ import annotations

from pathlib import Path

import pytest

from drover.boundaries import cluster_name, config_root, confined, flow_config_path, node_name
from drover.errors import InvalidName


@pytest.mark.parametrize("name", ["lab", "a", "lab-1", "x" * 40, "0day"])
def test_a_dns_label_of_at_most_40_characters_names_a_cluster(name: str) -> None:
    assert cluster_name(name) == name


@pytest.mark.parametrize("name", [
    "../../../x", "..", ".", "", "Lab", "lab_1", "-lab", "lab-", "a/b", "lab\0", "lab\n",
    "x" * 41, "lab.example", " lab",
])
def test_a_cluster_name_that_is_not_a_short_dns_label_is_refused(name: str) -> None:
    with pytest.raises(InvalidName) as caught:
        cluster_name(name)
    message = str(caught.value)
    assert repr(name[:60]) in message
    assert "DNS label" in message and "at most 40 characters" in message


@pytest.mark.parametrize("value, shown", [(None, "a NoneType"), (7, "a int"),
                                          (["lab"], "a list")])
def test_a_cluster_name_that_is_not_text_is_refused_naming_its_type(value, shown) -> None:
    with pytest.raises(InvalidName, match=shown):
        cluster_name(value)


def test_a_very_long_name_is_quoted_cut_short() -> None:
    with pytest.raises(InvalidName) as caught:
        cluster_name("a" * 5000)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("cluster, name", [
    ("lab", "lab-cp-1"), ("lab", "lab-worker-12"), ("lab", "lab-big-pool-3"),
    ("a-b", "a-b-cp-1"),
])
def test_a_node_name_is_the_cluster_a_pool_and_a_number(cluster: str, name: str) -> None:
    assert node_name(cluster, name) == name


@pytest.mark.parametrize("cluster, name", [
    ("lab", "other-cp-1"), ("lab", "lab-cp-x"), ("lab", "lab-1"), ("lab", "lab-cp-1/../x"),
    ("lab", "../lab-cp-1"), ("lab", "lab-cp-"), ("lab", "LAB-cp-1"),
    ("lab", "lab-" + "p" * 60 + "-1"), ("lab", None), ("../x", "../x-cp-1"),
])
def test_a_node_name_not_of_the_cluster_is_refused(cluster, name) -> None:
    with pytest.raises(InvalidName, match="name"):
        node_name(cluster, name)


# ---- confined paths -------------------------------------------------------------------------

@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "a.yaml").write_text("a: 1\n")
    (tmp_path / "outside.yaml").write_text("secret: 1\n")
    return tmp_path / "root"


def test_a_path_inside_the_root_is_returned_resolved(root: Path) -> None:
    assert confined(root / "sub" / ".." / "sub" / "a.yaml", root, "config") == (
        root / "sub" / "a.yaml").resolve()


def test_a_symlink_that_stays_inside_is_followed(root: Path) -> None:
    (root / "link.yaml").symlink_to(root / "sub" / "a.yaml")
    assert confined(root / "link.yaml", root, "config") == (root / "sub" / "a.yaml").resolve()


@pytest.mark.parametrize("escape", ["/etc/shadow", "../outside.yaml", "sub/../../outside.yaml",
                                    "link-out.yaml", "dir-out/outside.yaml"])
def test_a_path_leaving_the_root_is_refused_naming_the_path_and_the_root(root: Path,
                                                                         escape: str) -> None:
    (root / "link-out.yaml").symlink_to(root.parent / "outside.yaml")
    (root / "dir-out").symlink_to(root.parent)
    path = escape if escape.startswith("/") else root / escape
    with pytest.raises(InvalidName) as caught:
        confined(path, root, "config")
    message = str(caught.value)
    assert "outside" in message and str(root.resolve()) in message
    assert message.startswith("config ")


def test_a_path_with_a_nul_byte_is_refused(root: Path) -> None:
    with pytest.raises(InvalidName, match="not a usable path"):
        confined(f"{root}/a\0.yaml", root, "config")


def test_config_root_is_the_environment_setting_or_configs_of_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DROVER_CONFIG_ROOT", raising=False)
    assert config_root() == (tmp_path / "configs").resolve()
    monkeypatch.setenv("DROVER_CONFIG_ROOT", str(tmp_path / "elsewhere"))
    assert config_root() == (tmp_path / "elsewhere").resolve()


def test_a_flow_config_is_read_only_from_the_config_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DROVER_CONFIG_ROOT", raising=False)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "lab.yaml").write_text("kind: Cluster\n")
    assert flow_config_path("configs/lab.yaml") == (tmp_path / "configs" / "lab.yaml").resolve()
    assert flow_config_path(tmp_path / "configs" / "lab.yaml").name == "lab.yaml"
    for outside in ("/etc/shadow", "configs/../../etc/passwd", "lab.yaml"):
        with pytest.raises(InvalidName, match=r"flow runs read configs only from .*"
                                              r"DROVER_CONFIG_ROOT"):
            flow_config_path(outside)
