"""swarmd install/uninstall into a directory standing for / (--root): what is written, what is
kept, what is refused. The real thing, in a real systemd with a fresh venv, is in
tests/system/test_install.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmd.cli import main
from swarmd.install import MARKER, InstallError, executable, install, plan, shipped, uninstall


def unit_of(root: Path, name: str = "swarmd") -> str:
    return (root / "etc/systemd/system" / f"{name}.service").read_text()


def test_the_unit_runs_this_venvs_swarmd_with_the_shipped_sandbox(tmp_path: Path) -> None:
    said = install(root=str(tmp_path))
    text = unit_of(tmp_path)
    assert text.startswith(MARKER)
    assert f"ExecStart={executable()} run -c /etc/swarmd.yaml\n" in text
    assert f"ExecReload={executable()} reload\n" in text
    assert "/usr/local/bin/swarmd" not in text.split("[Unit]")[1]
    shipped_unit = shipped("swarmd.service")
    for line in ("DynamicUser=yes", "ProtectSystem=strict", "Delegate=yes", "OOMPolicy=continue",
                 "RuntimeDirectory=swarmd", "ProtectControlGroups=no"):
        assert f"\n{line}\n" in text and f"\n{line}\n" in shipped_unit, line
    assert (tmp_path / "usr/local/lib/systemd/catalog/swarmd.catalog").read_text() == \
        shipped("swarmd.catalog")
    assert (tmp_path / "etc/swarmd.yaml").read_text() == shipped("swarmd.yaml")
    assert said[-1].startswith("next: edit /etc/swarmd.yaml")
    assert "systemctl enable --now swarmd" in said[-1]


def test_a_named_fleet_gets_its_config_runtime_directory_and_fleet_field(tmp_path: Path) -> None:
    said = install("orders", root=str(tmp_path), user="worker")
    text = unit_of(tmp_path, "orders")
    assert f"ExecStart={executable()} run -c /etc/swarmd/orders.yaml\n" in text
    assert "\nRuntimeDirectory=swarmd-orders\n" in text  # `swarmd status -i orders` finds it
    assert "\nEnvironment=SWARMD_FLEET=orders\n" in text
    assert "\nDynamicUser=no\nUser=worker\n" in text
    assert (tmp_path / "etc/swarmd/orders.yaml").exists()
    assert "swarmd status -i orders" in said[-1]


def test_an_existing_config_is_never_touched(tmp_path: Path) -> None:
    config = tmp_path / "etc/swarmd.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("nodes: 7\n")
    said = install(root=str(tmp_path))
    assert config.read_text() == "nodes: 7\n"
    assert "kept /etc/swarmd.yaml as it is" in said
    install(root=str(tmp_path))  # a reinstall (an upgrade) rewrites the unit, keeps the config
    assert config.read_text() == "nodes: 7\n"


def test_print_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["install", "--print", "--root", str(tmp_path), "--name", "x"]) == 0
    assert capsys.readouterr().out.startswith(MARKER)
    assert list(tmp_path.iterdir()) == []


def test_a_unit_it_did_not_write_is_neither_overwritten_nor_removed(tmp_path: Path) -> None:
    unit = tmp_path / "etc/systemd/system/swarmd.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(InstallError, match="not written by swarmd install"):
        install(root=str(tmp_path))
    with pytest.raises(InstallError, match="not written by swarmd install"):
        uninstall(root=str(tmp_path))
    assert unit.read_text() == "[Service]\nExecStart=/bin/true\n"


def test_uninstall_takes_back_the_unit_and_the_last_catalog_never_a_config(
        tmp_path: Path) -> None:
    install(root=str(tmp_path))
    install("orders", root=str(tmp_path))
    catalog = tmp_path / "usr/local/lib/systemd/catalog/swarmd.catalog"
    said = uninstall("orders", root=str(tmp_path))
    assert not (tmp_path / "etc/systemd/system/orders.service").exists()
    assert catalog.exists()  # swarmd.service still uses it
    assert "kept your config" in said[-1]
    uninstall(root=str(tmp_path))
    assert not catalog.exists()
    assert (tmp_path / "etc/swarmd.yaml").exists()
    assert (tmp_path / "etc/swarmd/orders.yaml").exists()
    with pytest.raises(InstallError, match="nothing to uninstall"):
        uninstall(root=str(tmp_path))


@pytest.mark.parametrize("name, config, message", [
    ("../x", None, "use letters, digits"),
    ("x.service", None, "without its suffix"),
    ("", None, "use letters, digits"),
    ("x", "relative.yaml", "give an absolute path"),
])
def test_bad_arguments_say_what_to_do(tmp_path: Path, name: str, config: str | None,
                                      message: str) -> None:
    with pytest.raises(InstallError, match=message):
        plan(name, config, None, str(tmp_path))


def test_a_missing_user_is_refused_on_this_host() -> None:
    with pytest.raises(InstallError, match="no such user"):
        plan("x", None, "no-such-user-here", "/")


def test_the_cli_reports_errors_on_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["uninstall", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("swarmd uninstall: ") and "nothing to uninstall" in err
