"""Wire formats of the serving APIs, client side: request bodies and SSE event interpretation."""

from __future__ import annotations

from harness.protocols.base import (DONE, ERROR, FINAL, IGNORE, MALFORMED, TOKEN, Final, RequestSpec,
                                    WireProtocol)


def protocol_for(name: str, model: str = "", sampling=None, system_prompt: str | None = None) -> WireProtocol:
    """The client-side protocol object for a scenario's ``target.protocol``."""
    if name == "tgi":
        from harness.protocols.tgi import TgiProtocol
        return TgiProtocol(model, sampling)
    if name == "openai-completions":
        from harness.protocols.openai import CompletionsProtocol
        return CompletionsProtocol(model, sampling, system_prompt)
    if name == "openai-chat":
        from harness.protocols.openai import ChatProtocol
        return ChatProtocol(model, sampling, system_prompt)
    raise ValueError(f"unknown protocol {name!r}")


__all__ = ["DONE", "ERROR", "FINAL", "IGNORE", "MALFORMED", "TOKEN", "Final", "RequestSpec",
           "WireProtocol", "protocol_for"]
