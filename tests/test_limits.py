"""The ceilings (:mod:`flowbridge.limits`): refused by name, raised in code and on the
command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import flowbridge as fb
from flowbridge.cli import main


def test_ceilings_refuse_and_can_be_raised_in_code_and_on_the_command_line(tmp_path):
    data = {"event_shape": [4], "layers": [{"type": "affine_coupling",
                                            "conditioner": {"hidden": [70000]}}]}  # fmt: skip
    with pytest.raises(fb.SpecError, match="expected at most 65536 units"):
        fb.FlowSpec.from_dict(data)
    with fb.limits(width=2**17):
        assert fb.param_count(fb.FlowSpec.from_dict(data)) == 2 * 70000 + 70000 + 70000 * 4 + 4
    (tmp_path / "wide.json").write_text(json.dumps(data))
    refused = CliRunner().invoke(main, ["validate", str(tmp_path / "wide.json")])
    assert refused.exit_code == 2 and "expected at most 65536 units" in refused.output
    raised = CliRunner().invoke(main, ["--max-width", "131072", "validate", str(tmp_path / "wide.json")])
    assert raised.exit_code == 0 and "layers.0.conditioner.0.kernel: (2, 70000)" in raised.output
