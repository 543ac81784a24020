"""``GET /api-doc/openapi.json``: the OpenAPI document TGI's router serves (utoipa), reduced to
its routes and request bodies; enough for tools that discover the API from it."""

from __future__ import annotations

_ROUTES = [
    ("/", "post", "compat_generate", "CompatGenerateRequest"),
    ("/generate", "post", "generate", "GenerateRequest"),
    ("/generate_stream", "post", "generate_stream", "GenerateRequest"),
    ("/v1/chat/completions", "post", "chat_completions", "ChatRequest"),
    ("/v1/completions", "post", "completions", "CompletionRequest"),
    ("/invocations", "post", "sagemaker_compatibility", "SagemakerRequest"),
    ("/tokenize", "post", "tokenize", "GenerateRequest"),
    ("/chat_tokenize", "post", "get_chat_tokenize", "ChatRequest"),
    ("/health", "get", "health", None),
    ("/info", "get", "get_model_info", None),
    ("/metrics", "get", "metrics", None),
    ("/v1/models", "get", "openai_get_model_info", None),
]


def openapi_document(version: str) -> dict:
    paths: dict = {}
    for path, method, op, body in _ROUTES:
        spec: dict = {"tags": ["Text Generation Inference"], "operationId": op,
                      "responses": {"200": {"description": "OK"}}}
        if body:
            spec["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body}"}}}}
            spec["responses"]["422"] = {"description": "Input validation error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        paths.setdefault(path, {})[method] = spec
    schemas = {name: {"type": "object"} for *_, name in _ROUTES if name}
    schemas["ErrorResponse"] = {"type": "object", "required": ["error", "error_type"],
                                "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}}}
    return {"openapi": "3.0.3",
            "info": {"title": "Text Generation Inference", "description": "Text Generation Webserver",
                     "license": {"name": "Apache 2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
                     "version": version},
            "paths": paths, "components": {"schemas": schemas},
            "tags": [{"name": "Text Generation Inference", "description": "Hugging Face Text Generation Inference API"}]}
