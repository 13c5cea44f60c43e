"""What the page says: the header, the indexing line, the status of a search, its guesses, its details (JSON).

Plain text and Markdown only; the symbols are ones every font has (no emoji: a machine without an emoji font shows
an empty box).
"""

from __future__ import annotations

from typing import Any

from .guesses import GALLERY, Guess, NamePrior, guess_line
from .online.users import OnlineStatus
from .service import EXPANDED, PLAIN, RERANKED, Result, SearchResponse, SearchService

TITLE = "Hystar: style-adaptive image search"
NO_GALLERY = "No gallery yet: add photos below, or start the app with --gallery DIR"
INTRO = ("Draw a sketch, upload a painting or a low-res shot, type a text, or combine them: Hystar adapts the image "
         "encoder to the query's style before searching.")


def header(service: SearchService, title: str = TITLE) -> str:
    if service.base is None:
        return (f"## {title}\n\n{INTRO}\n\nGallery: being indexed (once; later starts load it) · encoder "
                f"`{service.config.encoder}` · re-ranking, online adaptation and the UMAP view are offered once it "
                f"is done")
    meta = service.base.index.meta
    adapt = "available" if service.can_adapt else "unavailable (no trained adapter)"
    rerank = ("available" if service.can_rerank else f"unavailable ({service.rerank_note})")
    if service.can_rerank and len([s for s in service.spaces if s.reranker is not None]) < len(service.spaces):
        rerank = "available for the Hystar side"
    online = "available" if service.can_online else f"unavailable ({service.online_note})"
    lines = [f"## {title}", INTRO,
             f"Gallery: **{len(service.base.index):,}** images under `{meta.root}` · encoder "
             f"`{meta.encoder['spec']}` · style adaptation: {adapt} · re-rank: {rerank} · online adaptation: {online}"]
    if service.gallery_size == 0:
        lines.append(f"**{NO_GALLERY}**")
    return "\n\n".join(lines)


def indexing_line(service: SearchService) -> str:
    """The page's progress line: images done / total and time left while indexing, nothing once ready."""
    status = service.indexing_status()
    if status.ready:
        return ""
    bar = "█" * (status.percent // 5) + "░" * (20 - status.percent // 5)
    return f"{'⚠ ' if status.error else ''}`{bar}` {status.line()}"


def rerank_info(service: SearchService) -> str | None:
    """The re-rank checkbox's line under its label."""
    if not service.can_rerank:
        return f"unavailable: {service.rerank_note}" if service.ready else service.rerank_note
    if len([s for s in service.spaces if s.reranker is not None]) < len(service.spaces):
        return "re-ranks the Hystar side (the base encoder has no QuARI re-ranker); replaces query expansion there"
    return "replaces query expansion"


def name_prior_info(prior: NamePrior | None) -> str:
    """The name-prior checkbox's line under its label: where a drawing does not lean."""
    where = "not when the text names it, nor for photos and paintings"
    if prior is not None and prior.min_confidence > 0:
        where += f", nor when the first guess is under {prior.min_confidence * 100:g} % sure"
    return where


def _processing(response: SearchResponse) -> str:
    """How the results were found, per side when the sides differ."""
    ways = response.processing
    if not ways:
        return ""
    if len(set(ways.values())) == 1:
        how = next(iter(ways.values()))
        return "" if how == PLAIN else f" · {how}"
    names = {"base": "base", "adapted": "Hystar"}
    return " · " + ", ".join(f"{names[side]}: {how}" for side, how in ways.items())


def status_line(response: SearchResponse) -> str:
    parts = " + ".join(response.parts)
    sides = "per side, base and adapted," if response.adapted is not None else "of the base encoder"
    text = (f"**{len(response.base)}** results {sides} for {parts} · {response.timings.get('total', 0.0):.0f} ms"
            + _processing(response))
    online = [] if response.online is None else [online_line(response.online)]
    return "  \n".join([text] + online + [f"⚠ {note}" for note in response.notes])


def online_line(status: OnlineStatus) -> str:
    side = "Hystar" if status.side == "adapted" else "base"
    images = f"{status.images} query image{'' if status.images == 1 else 's'}"
    if status.images < status.starts_after and status.updates == 0:
        seen = (f"{images} since the last reset; it starts adapting once it has seen {status.starts_after} "
                f"({status.starts_after - status.images} more), then steps on those it finds reliable")
    else:
        seen = (f"adapted on {status.adapted_on} of {images} since the last reset (the ones it found reliable, "
                f"about half), {status.updates} update{'' if status.updates == 1 else 's'}"
                + ("; a step needs two reliable images" if status.updates == 0 else ""))
    text = "" if status.observed else " (text is not adapted)"
    return f"online adaptation on ({side} encoder, this session only){text}: {seen}"


def online_details(status: OnlineStatus | None) -> dict[str, Any] | None:
    return None if status is None else {"on": True, "side": status.side, "images": status.images,
                                        "adapted_on": status.adapted_on, "updates": status.updates,
                                        "observed": status.observed, "starts_after": status.starts_after}


def guesses_text(response: SearchResponse | None) -> str:
    """"reads as (a guess …): cat 41 % · clock 12 % · dog 9 %", or "" when there is nothing to guess."""
    if response is None or not response.guesses:
        return ""
    source = "the gallery's class names" if response.vocabulary == GALLERY else "a general vocabulary"
    return (f"**Reads as** (a guess from {source}, not a fact): {guess_line(response.guesses)}. "
            f"Not what you meant? Click a name to add it to the text and search again, or type your own.")


def guess_button(guess: Guess) -> str:
    return f"+ {guess.name} ({round(100 * guess.probability)} %)"


def caption(result: Result) -> str:
    return f"{result.label} · {result.score:.2f}"


def details(response: SearchResponse) -> dict[str, Any]:
    def rows(results: list[Result] | None) -> list[dict[str, Any]] | None:
        if results is None:
            return None
        return [{"rank": r.rank, "score": round(r.score, 5), "label": r.label, "class": r.cls, "name": r.name}
                for r in results]

    return {"parts": response.parts, "base": rows(response.base), "adapted": rows(response.adapted),
            "expanded": response.expanded, "reranked": response.reranked, "name_prior": response.leaned,
            "processing": response.processing,
            "notes": response.notes, "timings_ms": {k: round(v, 1) for k, v in response.timings.items()},
            "delta_s": [{"source": e.source, "layers": [{"block": layer.block, "norm": round(layer.norm, 5),
                                                         "relative": round(layer.relative, 5)}
                                                        for layer in e.layers]} for e in response.explanations],
            "umap": None if response.placement is None else {"base": response.placement.base,
                                                              "adapted": response.placement.adapted},
            "online": online_details(response.online),
            "guesses": [{"name": g.name, "probability": round(g.probability, 4)} for g in response.guesses],
            "guess_vocabulary": response.vocabulary}


__all__ = ["EXPANDED", "NO_GALLERY", "RERANKED", "TITLE", "caption", "details", "guess_button", "guesses_text",
           "header", "indexing_line", "online_line", "rerank_info", "status_line"]
