"""``protocol: auto``: ask the first replica what it speaks before any load is sent.

``GET /info`` answering TGI's shape (``model_id``) means TGI's native ``/generate_stream``;
otherwise ``GET /v1/models`` answering an OpenAI model list means the OpenAI chat route (every
OpenAI-compatible server and hosted API has it; ``/v1/completions`` is legacy on several). A
scenario that names no model then sends the first model the list gives.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from harness.errors import LaunchError
from harness.protocols.access import Access, parse_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detected:
    protocol: str
    model: str | None   # what the server says it serves, when it says
    why: str            # one line for the console


def _json(access: Access, url: str, timeout_s: float):
    try:
        status, body = access.get(url, timeout_s)
    except OSError as e:
        return None, str(e)
    if status != 200:
        return None, f"{url}: HTTP {status}"
    try:
        return json.loads(body), None
    except ValueError:
        return None, f"{url}: not JSON"


def detect(url: str, access: Access | None = None, timeout_s: float = 5.0) -> Detected:
    """What ``url`` speaks; LaunchError (exit 3) saying what each route answered when neither fits."""
    access = access or Access()
    where = parse_url(url)
    base = f"{where.scheme}://{where.host_header}"
    info_url = base + where.path("/info")
    info, why_info = _json(access, info_url, timeout_s)
    if isinstance(info, dict) and "model_id" in info:
        return Detected("tgi", str(info["model_id"]), f"{info_url} answered as TGI")
    if why_info is None:
        why_info = f"{info_url}: not TGI's /info (no model_id)"
    models_url = base + where.path("/v1/models")
    models, why_models = _json(access, models_url, timeout_s)
    if isinstance(models, dict) and isinstance(models.get("data"), list):
        ids = [m.get("id") for m in models["data"] if isinstance(m, dict) and m.get("id")]
        return Detected("openai-chat", str(ids[0]) if ids else None, f"{models_url} answered as OpenAI")
    if why_models is None:
        why_models = f"{models_url}: not an OpenAI model list (no data)"
    raise LaunchError(f"protocol auto: {url} is neither TGI nor OpenAI-compatible ({why_info}; {why_models}); "
                      f"set target.protocol")


def resolve(scenario, urls: list[str]):
    """``scenario`` with ``target.protocol: auto`` replaced by what the first URL speaks (and, for
    OpenAI routes with no model given, the model it lists); any other scenario unchanged."""
    target = scenario.target
    if target.protocol != "auto":
        return scenario
    if not urls:
        raise LaunchError("protocol auto needs a replica URL to ask")
    found = detect(urls[0], Access.from_target(target), min(10.0, target.connect_timeout_s))
    update: dict = {"protocol": found.protocol}
    if found.protocol != "tgi" and "model" not in target.model_fields_set and found.model:
        update["model"] = found.model
    log.info("protocol auto: %s: %s%s", found.why, found.protocol,
             f", model {update['model']}" if "model" in update else "")
    return scenario.model_copy(update={"target": target.model_copy(update=update)})
