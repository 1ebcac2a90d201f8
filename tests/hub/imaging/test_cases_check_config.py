"""`vethub check-config` says how each company receives its cases."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from hub import cli

from .cases_helpers import EXAMPLE


def test_check_config_names_each_companys_delivery(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.cli, ["check-config", "--config", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert ("company demo-rads: cases delivered in the hub (GET /api/cases, zip, DICOMweb WADO-RS "
            "at /dicomweb); notifications to reads@demo-rads.example") in result.output

    text = EXAMPLE.read_text(encoding="utf-8").replace(
        '# destination = { host = "pacs.demo-rads.example", port = 104, ae_title = "DEMORADS" }',
        'destination = { host = "pacs.demo-rads.example", port = 104, ae_title = "DEMORADS" }')
    path = tmp_path / "vethub.toml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli.cli, ["check-config", "--config", str(path)])
    assert "company demo-rads: cases delivered C-STORE to DEMORADS@pacs.demo-rads.example:104 " \
           "(images + request object)" in result.output
