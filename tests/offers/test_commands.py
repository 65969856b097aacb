from __future__ import annotations

from tests.subprocesses import manage, project_env


def test_runstream_explains_that_embedded_mode_needs_no_worker(tmp_path):
    result = manage("runstream", env=project_env(DATABASE_URL=f"sqlite:///{tmp_path}/db"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "runstream needs REDIS_URL: in embedded mode `serve` runs the stream worker itself"
    ]


def test_serve_without_a_worker_needs_redis(tmp_path):
    result = manage(
        "serve", "--no-worker", env=project_env(DATABASE_URL=f"sqlite:///{tmp_path}/db")
    )
    assert result.returncode == 2
    assert "--no-worker needs REDIS_URL" in result.stderr
