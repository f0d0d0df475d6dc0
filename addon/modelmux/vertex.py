"""Model routing and Vertex AI URL building.

Hosts (see shared notes): a region `R` → `R-aiplatform.googleapis.com`; `global` → `aiplatform.googleapis.com`
(not `global-aiplatform…`, a bug the seed shipped); multi-regions `us`/`eu` → `aiplatform.{us|eu}.rep.googleapis.com`.
A `base_url` replaces scheme and host only.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from .config import Config, EmbeddingLimits

MULTI_REGIONS = ("us", "eu")


def vertex_origin(region: str) -> str:
    if region == "global":
        return "https://aiplatform.googleapis.com"
    if region in MULTI_REGIONS:
        return f"https://aiplatform.{region}.rep.googleapis.com"
    return f"https://{region}-aiplatform.googleapis.com"


def model_url(*, project: str, region: str, model: str, stream: bool, base_url: str | None = None) -> str:
    origin = base_url or vertex_origin(region)
    method = "streamRawPredict" if stream else "rawPredict"
    # '@' is legal in a path segment; keep it literal as Google's own clients do.
    return (
        f"{origin}/v1/projects/{quote(project, safe='')}/locations/{quote(region, safe='')}"
        f"/publishers/anthropic/models/{quote(model, safe='@')}:{method}"
    )


def predict_url(*, project: str, region: str, model: str, base_url: str | None = None) -> str:
    """Vertex's own (publisher `google`) models, e.g. the embedding models: `:predict`."""
    origin = base_url or vertex_origin(region)
    return (
        f"{origin}/v1/projects/{quote(project, safe='')}/locations/{quote(region, safe='')}"
        f"/publishers/google/models/{quote(model, safe='@')}:predict"
    )


@dataclass(frozen=True)
class Route:
    requested: str  # the name the client sent; echoed back in `model`
    vertex_model: str  # the Vertex id, e.g. claude-sonnet-4-5@20250929


@dataclass(frozen=True)
class EmbeddingRoute:
    requested: str  # the name the client sent; echoed back in `model`
    vertex_model: str  # e.g. gemini-embedding-001
    limits: EmbeddingLimits  # embeddings.limits for that model (or Vertex's general limits)


class UnknownModel(LookupError):
    def __init__(self, model: str):
        super().__init__(model)
        self.model = model


class Router:
    """Maps the model a client asks for to a Vertex Claude model.

    Order: an explicit `models.map` entry; a name that already is a Claude id (`claude-…`) as is;
    otherwise `models.default`, or UnknownModel when that is null.
    """

    def __init__(self, config: Config):
        self._config = config
        self._map = dict(config.models.map)
        self._embedding_map = dict(config.embeddings.map)

    def route(self, requested: str) -> Route:
        target = self._map.get(requested)
        if target is None and requested.startswith("claude-"):
            target = requested
        if target is None:
            target = self._config.models.default
        if target is None:
            raise UnknownModel(requested)
        return Route(requested=requested, vertex_model=target)

    def url(self, route: Route, *, stream: bool, region: str | None = None) -> str:
        v = self._config.vertex
        return model_url(project=v.project, region=region or v.region, model=route.vertex_model, stream=stream,
                         base_url=v.base_url)

    def count_tokens_url(self, *, region: str | None = None) -> str:
        """Vertex's Claude count-tokens endpoint (the model goes in the body)."""
        v = self._config.vertex
        return model_url(project=v.project, region=region or v.region, model="count-tokens", stream=False,
                         base_url=v.base_url)

    def regions(self) -> list[str]:
        """The configured region, then the fallbacks, in order, without repeats."""
        v = self._config.vertex
        return list(dict.fromkeys([v.region, *v.fallback_regions]))

    def listed_models(self) -> list[str]:
        """What `GET /v1/models` lists: every mapped name, then every distinct Vertex model they reach."""
        names = list(self._map)
        default = self._config.models.default
        targets = [*self._map.values(), *([default] if default else [])]
        return list(dict.fromkeys(names + targets))

    def label(self, requested: str) -> str:
        """A model's metric label: its name when `models.map` configures it, else "other" — the names clients
        choose must not grow the set of series."""
        return requested if requested in self._map or requested in self._embedding_map else "other"

    def routable(self, model: str) -> bool:
        """Whether a chat request for `model` would be served (what `GET /v1/models/{model}` answers)."""
        try:
            self.route(model)
        except UnknownModel:
            return False
        return True

    # --- embeddings (POST /v1/embeddings → :predict) ------------------------------------------------------

    def route_embedding(self, requested: str) -> EmbeddingRoute:
        """Order: an `embeddings.map` entry; a name that is a Vertex model of `embeddings.limits` as is (e.g.
        `gemini-embedding-001`); otherwise `embeddings.default`, or UnknownModel when that is null."""
        emb = self._config.embeddings
        target = self._embedding_map.get(requested)
        if target is None and requested in emb.limits:
            target = requested
        if target is None:
            target = emb.default
        if target is None:
            raise UnknownModel(requested)
        return EmbeddingRoute(requested=requested, vertex_model=target, limits=emb.limits_for(target))

    def embedding_url(self, route: EmbeddingRoute, *, region: str | None = None) -> str:
        v = self._config.vertex
        return predict_url(project=v.project, region=region or v.region, model=route.vertex_model,
                           base_url=v.base_url)

    def listed_embedding_models(self) -> list[str]:
        """The embedding names `GET /v1/models` lists: every mapped name, then every Vertex model they reach."""
        names = list(self._embedding_map)
        default = self._config.embeddings.default
        targets = [*self._embedding_map.values(), *([default] if default else [])]
        return list(dict.fromkeys(names + targets))

    def embedding_routable(self, model: str) -> bool:
        try:
            self.route_embedding(model)
        except UnknownModel:
            return False
        return True
