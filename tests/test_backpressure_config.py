"""The two keys of ingress backpressure: `service.max_outstanding_jobs` (default 10000, root file
only) and `plugins.<name>.max_outstanding_jobs` (absent: only the global bound). Bad values are
refused at load naming the file, the key and the allowed range; both are in the config schema,
the snapshot and `config show`; both take effect on reload (a real gateway)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ductile.config.filecheck import check_text
from ductile.config.json_schema import config_schema
from ductile.config.load import load_config
from ductile.config.schema import DEFAULT_MAX_OUTSTANDING_JOBS
from ductile.config.snapshot import snapshot_fields
from ductile.config.view import config_view
from ductile.errors import ConfigError
from support.gateway import Gateway, free_port, write_config

BASE = "plugin_roots: [p]\n"


def _load(tmp_path: Path, text: str) -> object:
    (tmp_path / "config.yaml").write_text(BASE + text)
    return load_config(str(tmp_path), environ={})


def test_the_defaults_bound_the_gateway_and_no_plugin(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "plugins: {echo: {enabled: false}}\n")
    assert cfg.service.max_outstanding_jobs == DEFAULT_MAX_OUTSTANDING_JOBS == 10_000
    assert cfg.plugins["echo"].max_outstanding_jobs is None
    assert cfg.plugin("unconfigured").max_outstanding_jobs is None


def test_set_values_are_kept(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "service: {max_outstanding_jobs: 1}\n"
                          "plugins: {echo: {max_outstanding_jobs: 50}}\n")
    assert cfg.service.max_outstanding_jobs == 1
    assert cfg.plugins["echo"].max_outstanding_jobs == 50


@pytest.mark.parametrize("value", ["0", "-5", "ten", "'50'", "true", "1.5", "[3]", "{a: 1}"])
@pytest.mark.parametrize("where", ["service", "plugin"])
def test_a_bad_value_is_refused_naming_the_file_key_and_range(
        tmp_path: Path, value: str, where: str) -> None:
    text = (f"service: {{max_outstanding_jobs: {value}}}\n" if where == "service"
            else f"plugins: {{echo: {{enabled: false, max_outstanding_jobs: {value}}}}}\n")
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, text)
    key = ("service.max_outstanding_jobs" if where == "service"
           else "plugins.echo.max_outstanding_jobs")
    message = str(refused.value)
    assert message.startswith(f"config.yaml: {key}: expected an integer of 1 or more"), message
    assert refused.value.key == key
    assert "leave it out" in message


def test_the_global_key_is_read_from_the_root_file_only(tmp_path: Path) -> None:
    (tmp_path / "more.yaml").write_text("service: {max_outstanding_jobs: 3}\n"
                                        "plugins: {echo: {max_outstanding_jobs: 4}}\n")
    cfg = _load(tmp_path, "include: [more.yaml]\nservice: {max_outstanding_jobs: 7}\n")
    assert cfg.service.max_outstanding_jobs == 7
    assert cfg.plugins["echo"].max_outstanding_jobs == 4  # a plugin stanza may live anywhere
    assert ("more.yaml: service.max_outstanding_jobs is read only from the root config file "
            "(ignored)") in cfg.warnings


def test_the_schema_snapshot_and_view_carry_both_keys(tmp_path: Path) -> None:
    schema = config_schema()
    service = schema["$defs"]["ServiceConfig"]["properties"]["max_outstanding_jobs"]
    plugin = schema["$defs"]["PluginConf"]["properties"]["max_outstanding_jobs"]
    assert service["type"] == plugin["type"] == "integer"
    assert service["minimum"] == plugin["minimum"] == 1
    problems = check_text(BASE + "plugins: {echo: {max_outstanding_jobs: 0}}\n", schema,
                          display="config.yaml")
    assert [p.key for p in problems] == ["plugins.echo.max_outstanding_jobs"]
    cfg = _load(tmp_path, "plugins: {echo: {max_outstanding_jobs: 5}, free: {}}\n")
    fields = snapshot_fields(cfg, {})["sanitized_config"]
    assert fields["service"]["max_outstanding_jobs"] == 10_000
    assert fields["plugins"]["echo"]["max_outstanding_jobs"] == 5
    assert fields["plugins"]["free"]["max_outstanding_jobs"] is None
    view = config_view(cfg)
    assert view["service"]["max_outstanding_jobs"] == 10_000
    assert view["plugins"]["echo"]["max_outstanding_jobs"] == 5


def test_both_bounds_take_effect_on_reload(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, service={"max_outstanding_jobs": 50},
                       plugins={"echo": {"enabled": True, "max_outstanding_jobs": 9}})
    gw = Gateway(cfg, port).start()
    try:
        before = gw.get("/healthz").json()["backpressure"]
        assert before["max_outstanding_jobs"] == 50
        assert before["plugins"]["echo"]["max_outstanding_jobs"] == 9
        doc = yaml.safe_load((cfg / "config.yaml").read_text())
        doc["service"]["max_outstanding_jobs"] = 70
        doc["plugins"]["echo"]["max_outstanding_jobs"] = 2
        (cfg / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        assert gw.post("/system/reload").status_code == 200
        after = gw.get("/healthz").json()["backpressure"]
        assert after["max_outstanding_jobs"] == 70
        assert after["plugins"]["echo"]["max_outstanding_jobs"] == 2
        # A bad value is refused by the reload (the old bounds keep serving), naming the key.
        doc["service"]["max_outstanding_jobs"] = 0
        (cfg / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        refused = gw.post("/system/reload")
        assert refused.status_code == 409
        assert "service.max_outstanding_jobs" in refused.json()["error"]
        assert gw.get("/healthz").json()["backpressure"]["max_outstanding_jobs"] == 70
    finally:
        assert gw.stop() == 0
