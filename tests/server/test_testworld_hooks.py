"""A failing test that used a ComfyUI server gets the server log's tail in its report."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_failed_test_report_carries_the_server_log(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from tests.comfy.install import ComfyEnv
        from tests.comfy.server import ComfyServer
        from tests.conftest import pytest_runtest_makereport  # the hook under test

        @pytest.fixture
        def comfy_server(tmp_path):
            env = ComfyEnv(root=tmp_path, python=tmp_path, comfy_dir=tmp_path,
                           front_end_root=tmp_path, models=tmp_path, build_seconds=None)
            (tmp_path / "server.log").write_text("booting\\nTraceback: boom in KSampler\\n")
            return ComfyServer(env=env, base_dir=tmp_path, port=1)
        """
    )
    pytester.makepyfile(
        """
        def test_fails(comfy_server):
            assert False

        def test_passes(comfy_server):
            assert True
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*ComfyUI log*server.log (last lines)*", "*boom in KSampler*"])
    assert result.stdout.str().count("boom in KSampler") == 1
