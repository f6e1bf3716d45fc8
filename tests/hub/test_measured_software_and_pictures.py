"""Software a site's agent measured, beside what its admin declared; pictures agents send.

Agents are played by the test over real HTTP, as in tests/hub/test_jobs.py (the agent's
own probing of real RELION installs is in tests/site_agent/test_software.py, and the whole
path with real agent processes and a real Class2D in tests/test_relion_sites.py)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from site_agent.pictures import png_of
from tests.helpers import Hub
from tests.hub.test_jobs import CPU_SITE, SiteAgent, add_site, jhub, spec, submit

__all__ = ["jhub"]

MEASURED_CPU = {"name": "relion", "version": "3.1.3", "build": "cpu", "mpi": True, "path": "/usr/bin", "notes": "RELION 3.1.3"}
MEASURED_GPU = {"name": "relion", "version": "5.0.0", "build": "cuda", "cuda_archs": ["8.0", "8.6"], "mpi": False,
                "path": "/opt/relion-5/bin", "future_field": "ignored"}  # fmt: skip


def report_software(agent: SiteAgent, software: list[dict[str, Any]]) -> None:
    part = {
        "name": "cpu",
        "cpus_total": 256,
        "cpus_allocated": 0,
        "cpus_idle": 256,
        "memory_total_mb": 1000,
        "memory_free_mb": 500,
    }
    body = {"agent_version": "t", "interval_s": 15, "sampled_at": "2026-01-01T00:00:00Z", "backend": "slurm",
            "partitions": [part], "software": software}  # fmt: skip
    r = agent.http.post(f"/api/v1/sites/{agent.name}/heartbeat", json=body)
    assert r.status_code == 200, r.text


def software_of(hub: Hub, site: str) -> list[dict[str, Any]]:
    with hub.as_admin() as c:
        return list(c.get(f"/api/v1/sites/{site}").json()["software"])


def test_measured_software_is_listed_as_measured_and_places_jobs(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE, software=[], institution="kek")
    me = jhub.account("researcher", institution="kek")
    class2d = spec(kind="relion.class2d", command=None, parameters={"i": "particles.star"}, resources={"cpus": 2})
    r = submit(jhub, me, class2d)
    assert r.status_code == 409 and "alpha: does not offer relion" in r.json()["detail"], "nothing declared, nothing measured"

    report_software(alpha, [MEASURED_CPU, MEASURED_GPU])
    listed = software_of(jhub, "alpha")
    rows = {(s["version"], s["cuda_arch"]): s for s in listed}
    assert set(rows) == {("3.1.3", None), ("5.0.0", "8.0"), ("5.0.0", "8.6")}, "one row per CUDA architecture"
    cpu = rows[("3.1.3", None)]
    assert (cpu["source"], cpu["build"], cpu["mpi"], cpu["path"]) == ("measured", "cpu", True, "/usr/bin")
    assert cpu["measured_at"] and rows[("5.0.0", "8.6")]["build"] == "cuda"
    r = submit(jhub, me, class2d)
    assert r.status_code == 201 and r.json()["site"] == "alpha", r.text

    # The admin's declared list is replaced whole; what the agent measured stays.
    with jhub.as_admin() as c:
        r2 = c.patch("/api/v1/sites/alpha", json={"software": [{"name": "ctffind", "version": "4.1.14"}]})
    assert r2.status_code == 200, r2.text
    sources = sorted((s["name"], s["source"]) for s in software_of(jhub, "alpha"))
    assert sources == [("ctffind", "declared"), ("relion", "measured"), ("relion", "measured"), ("relion", "measured")]

    # The agent measures nothing any more (RELION removed): the registry follows.
    report_software(alpha, [])
    assert [(s["name"], s["source"]) for s in software_of(jhub, "alpha")] == [("ctffind", "declared")]
    r = submit(jhub, me, class2d)
    assert r.status_code == 409 and "does not offer relion" in r.json()["detail"]


def test_a_heartbeat_without_software_keeps_what_was_measured(jhub: Hub, tmp_path: Path) -> None:
    alpha = add_site(jhub, tmp_path, "alpha", CPU_SITE, software=[])
    report_software(alpha, [MEASURED_CPU])
    alpha.heartbeat()  # no "software": unchanged since the hub acknowledged it
    assert [s["version"] for s in software_of(jhub, "alpha")] == ["3.1.3"]


def test_an_agent_cannot_claim_a_measured_source_for_declared_software(jhub: Hub) -> None:
    with jhub.as_admin() as c:
        r = c.post("/api/v1/sites", json={"name": "omega", "institution": "x", "display_name": "Omega", "country": "JP",
                                          "software": [{"name": "relion", "version": "5.0", "source": "measured"}]})  # fmt: skip
    assert r.status_code == 422 and "software.0.source" in r.json()["detail"], r.text


# ---------------------------------------------------------------- pictures


def png_b64(side: int = 48) -> str:
    rng = np.random.default_rng(side)
    return base64.b64encode(png_of(rng.normal(size=(side, side)), size=side)).decode()


def picture(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "caption": f"{name} caption", "png_base64": png_b64(), **kw}


def running_job(hub: Hub, tmp_path: Path) -> tuple[SiteAgent, SiteAgent, dict[str, Any], Any]:
    alpha = add_site(hub, tmp_path, "alpha", CPU_SITE, software=[], institution="kek")
    beta = add_site(hub, tmp_path, "beta", CPU_SITE, software=[], institution="kek")
    me = hub.account("researcher", institution="kek")
    job = submit(hub, me, spec(placement={"allowed_sites": ["alpha"]})).json()
    (offer,) = alpha.poll()
    assert alpha.claim(offer["attempt_id"]).status_code == 200
    return alpha, beta, job, me


def test_the_jobs_site_sends_pictures_and_its_people_see_them(jhub: Hub, tmp_path: Path) -> None:
    alpha, _, job, me = running_job(jhub, tmp_path)
    route = f"/api/v1/jobs/{job['id']}/pictures"
    body = {"pictures": [picture("class-002", share=0.6, pixel_size_a=2.0), picture("class-001", share=0.4)]}
    r = alpha.http.put(route, json=body)
    assert r.status_code == 200, r.text
    listed = {p["name"]: p for p in r.json()}
    assert listed["class-002"]["share"] == 0.6 and listed["class-002"]["pixel_size_a"] == 2.0
    assert listed["class-002"]["site"] == "alpha" and (listed["class-002"]["width"], listed["class-002"]["height"]) == (48, 48)
    assert listed["class-001"]["url"] == f"{jhub.url}{route}/class-001"
    with jhub.as_(me) as c:
        assert [p["name"] for p in c.get(route).json()] == ["class-002", "class-001"], "largest share first"
        png = c.get(f"{route}/class-001")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content == base64.b64decode(body["pictures"][1]["png_base64"])
        missing = c.get(f"{route}/class-009")
        assert missing.status_code == 404 and missing.json()["error"] == "NotFound"
    # Sending again replaces the set whole.
    assert alpha.http.put(route, json={"pictures": [picture("class-001")]}).status_code == 200
    with jhub.as_(me) as c:
        assert [p["name"] for p in c.get(route).json()] == ["class-001"]


def test_who_may_not_send_or_see_job_pictures(jhub: Hub, tmp_path: Path) -> None:
    alpha, beta, job, me = running_job(jhub, tmp_path)
    route = f"/api/v1/jobs/{job['id']}/pictures"
    body = {"pictures": [picture("class-001")]}
    r = beta.http.put(route, json=body)
    assert r.status_code == 403 and r.json() == {
        "error": "Forbidden",
        "detail": f"job {job['id']} is not at site beta: only its site's agent adds its pictures",
    }
    with jhub.as_(me) as c:
        r = c.put(route, json=body)
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", "people do not upload pictures"
    r = alpha.http.put("/api/v1/jobs/no-such-job/pictures", json=body)
    assert r.status_code == 404 and r.json() == {"error": "NotFound", "detail": "no job 'no-such-job'"}
    assert alpha.http.put(route, json=body).status_code == 200
    stranger = jhub.account("researcher", institution="elsewhere")
    with jhub.as_(stranger) as c:
        for path in (route, f"{route}/class-001"):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["detail"] == f"no job {job['id']!r}", "not even confirmed to exist"
    r = alpha.http.get(route)
    assert r.status_code == 403 and r.json()["error"] == "Forbidden", "agents do not read pictures"


def test_what_is_not_a_small_png_is_refused(jhub: Hub, tmp_path: Path) -> None:
    alpha, _, job, _ = running_job(jhub, tmp_path)
    route = f"/api/v1/jobs/{job['id']}/pictures"
    big = Image.fromarray(np.zeros((300, 300), dtype=np.uint8), mode="L")
    import io

    buf = io.BytesIO()
    big.save(buf, format="PNG")
    cases = {
        "png_base64 is not base64": "not base64!",
        "not a PNG": base64.b64encode(b"GIF89a" + bytes(100)).decode(),
        "300x300 pixels; at most 256 a side": base64.b64encode(buf.getvalue()).decode(),
        "not a readable PNG": base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(64)).decode(),
    }
    for said, data in cases.items():
        r = alpha.http.put(route, json={"pictures": [{"name": "class-001", "png_base64": data}]})
        assert r.status_code == 400 and r.json()["error"] == "BadRequest" and said in r.json()["detail"], (said, r.text)
    r = alpha.http.put(route, json={"pictures": [picture("class-001"), picture("class-001")]})
    assert r.status_code == 400 and r.json()["detail"] == "picture names given twice: class-001"
    r = alpha.http.put(route, json={"pictures": [picture(f"class-{i:03d}") for i in range(17)]})
    assert r.status_code == 422 and "pictures" in r.json()["detail"], "at most 16"
    r = alpha.http.put(route, json={"pictures": [picture("../etc")]})
    assert r.status_code == 422 and "name" in r.json()["detail"]


def test_a_datasets_owner_site_sends_its_pictures(jhub: Hub, tmp_path: Path) -> None:
    from site_agent.datasets import describe

    alpha, beta, _, me = running_job(jhub, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "particles.star").write_text("data_particles\n")
    body = describe(data, {"title": "particles", "visibility": "network"})
    r = alpha.http.post("/api/v1/datasets", json=body.model_dump(mode="json"))
    assert r.status_code == 201, r.text
    ds = r.json()["id"]
    route = f"/api/v1/datasets/{ds}/pictures"
    r = beta.http.put(route, json={"pictures": [picture("particle-001")]})
    assert r.status_code == 403 and r.json() == {
        "error": "Forbidden",
        "detail": f"dataset {ds} is not owned by site beta: only its owner's agent adds its pictures",
    }
    r = alpha.http.put(route, json={"pictures": [picture("particle-001", pixel_size_a=2.0)]})
    assert r.status_code == 200, r.text
    with jhub.as_(me) as c:
        (p,) = c.get(route).json()
        assert p["pixel_size_a"] == 2.0 and c.get(p["url"]).headers["content-type"] == "image/png"
        detail = c.get(f"/api/v1/dashboard/datasets/{ds}").json()
    assert detail["dataset"]["id"] == ds and detail["pictures"][0]["src"].startswith("data:image/png;base64,")
