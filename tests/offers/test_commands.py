from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.subprocesses import manage, project_env


@pytest.mark.slow
def test_runstream_explains_that_embedded_mode_needs_no_worker(tmp_path):
    result = manage("runstream", env=project_env(DATABASE_URL=f"sqlite:///{tmp_path}/db"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "runstream needs REDIS_URL: in embedded mode `serve` runs the stream worker itself"
    ]


@pytest.mark.slow
def test_serve_without_a_worker_needs_redis(tmp_path):
    result = manage(
        "serve", "--no-worker", env=project_env(DATABASE_URL=f"sqlite:///{tmp_path}/db")
    )
    assert result.returncode == 2
    assert "--no-worker needs REDIS_URL" in result.stderr


def test_a_worker_s_metrics_need_the_bearer_token_when_one_is_set(settings):
    from offers import metrics
    from offers.management.commands.runstream import serve_metrics

    settings.METRICS_TOKEN = "s3cret"
    metrics.DECISIONS.labels("offer").inc()
    server = serve_metrics("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/metrics", timeout=5)
        assert refused.value.code == 401
        refused.value.close()
        with pytest.raises(urllib.error.HTTPError) as elsewhere:
            urllib.request.urlopen(f"{url}/admin/", timeout=5)
        assert elsewhere.value.code == 404
        elsewhere.value.close()
        request = urllib.request.Request(
            f"{url}/metrics", headers={"Authorization": "Bearer s3cret"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'liveoffers_decisions_total{outcome="offer"}' in body
