"""How change capture goes: its mode and why, who captures, how far behind, the last sweep and the documents
it cannot use. Read by the overview, health, the alert rule, the per-minute sample and ``/metrics``."""
from __future__ import annotations

from datetime import datetime, timedelta

from jobflow.models import CaptureState, JobMisfit
from jobflow.timeutil import ms

LAG_WINDOW = timedelta(minutes=1)
MISFITS_SHOWN = 20


def lag_figures(lags: list[dict], since: datetime, until: datetime | None = None) -> dict:
    """p50, p99 and max of the lags (ms) recorded from ``since`` (to ``until``), and how many."""
    values = sorted(int(entry["ms"]) for entry in lags
                    if isinstance(entry.get("at"), datetime) and entry["at"] >= since
                    and (until is None or entry["at"] < until) and isinstance(entry.get("ms"), (int, float)))
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    return {"count": len(values), "p50": values[len(values) // 2],
            "p99": values[min(len(values) - 1, int(len(values) * 0.99))], "max": values[-1]}


def capture_status(settings: dict, now: datetime, misfits: bool = True) -> dict:
    """The capture's state: ``state`` is off, ok, behind or down, with ``problem`` saying why when not ok."""
    setting = settings["CHANGE_CAPTURE"]
    doc = CaptureState._get_collection().find_one({"_id": "jobs"}) or {}
    limit = ms(settings["ALERT_CAPTURE_LAG"])
    silent_limit = max(2 * ms(settings["CHANGE_CAPTURE_LEASE"]), limit)
    heartbeat = doc.get("heartbeatAt")
    lag = lag_figures(doc.get("lags") or [], now - LAG_WINDOW)
    sweep = doc.get("sweep") or {}
    out = {"setting": setting, "mode": doc.get("mode"), "reason": doc.get("reason"), "owner": doc.get("owner"),
           "heartbeatAt": heartbeat, "lastEventAt": doc.get("lastEventAt"), "lag": lag, "lagLimitMs": int(
               limit.total_seconds() * 1000), "events": doc.get("events") or 0, "enqueued": doc.get("enqueued") or 0,
           "sweep": sweep, "problem": None, "state": "ok"}
    if setting == "off":
        out.update(state="off", mode="off", reason="CHANGE_CAPTURE=off: only writes through /api/jobs are noticed")
    elif isinstance(doc.get("troubleAt"), datetime) and (not isinstance(heartbeat, datetime)
                                                         or doc["troubleAt"] > heartbeat):
        out.update(state="down", problem=f"change capture is down: {doc.get('trouble')}")
    elif not isinstance(heartbeat, datetime):
        out.update(state="starting")      # no worker has run it yet (the workers rule says when none runs)
    elif now - heartbeat > silent_limit:
        out.update(state="down", problem="change capture is down: no worker has followed the jobs collection for "
                   + _seconds(now - heartbeat))
    elif sweep.get("state") == "running" and isinstance(sweep.get("startedAt"), datetime) \
            and now - sweep["startedAt"] > limit:
        out.update(state="behind", problem=f"change capture is sweeping every job ({sweep.get('scanned', 0)} of "
                                           f"about {sweep.get('total', 0)} compared) after it lost its history")
    elif lag["p99"] is not None and lag["p99"] > limit.total_seconds() * 1000:
        out.update(state="behind", problem=f"change capture is {lag['p99']} ms behind (p99 over the last minute; "
                                           f"ALERT_CAPTURE_LAG is {out['lagLimitMs']} ms)")
    if misfits:
        coll = JobMisfit._get_collection()
        out["misfitCount"] = coll.estimated_document_count()
        out["misfits"] = list(coll.find({}, {"reason": 1, "at": 1}).sort("at", -1).limit(MISFITS_SHOWN))
    return out


def _seconds(delta: timedelta) -> str:
    return f"{int(delta.total_seconds())} s"
