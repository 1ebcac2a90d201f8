"""Built-in case routing: the practice's account whose company reads the study's modality.

A study's modalities are tried in the order they arrived (the first instance's modality
first). Only the practice's current accounts count: one it switched away from or closed reads
nothing for it any more. Among accounts that read it, an approved one is preferred (a
suspended one is chosen only when nothing else reads it, so the practice hears which company
to contact), then the oldest account. When none reads any of the study's modalities, the case
is refused with the reason, naming the modality and what each current account's company reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.hookspecs import hookimpl
from hub.imaging.routing import AccountFacts, CaseRequest, RouteDecision, StudyFacts

# Account statuses that still read for the practice (a suspension is approved_for_access=False).
CURRENT = frozenset({"active"})
# Objects that accompany images but are not read on their own.
NON_IMAGE_MODALITIES = frozenset({"SR", "PR", "KO", "DOC", "REG", "SEG", "RTSTRUCT"})


def _modalities(study: StudyFacts) -> list[str]:
    seen: list[str] = []
    for m in ([study.modality] if study.modality else []) + list(study.modalities):
        if m and m not in seen:
            seen.append(m)
    images = [m for m in seen if m not in NON_IMAGE_MODALITIES]
    return images or seen


def route(study: StudyFacts, accounts: Sequence[AccountFacts]) -> RouteDecision:
    modalities = _modalities(study)
    if not modalities:
        return RouteDecision.refuse("the study has no modality to route by")
    accounts = [a for a in accounts if a.status in CURRENT]
    if not accounts:
        return RouteDecision.refuse(
            f"the practice has no current account with a company to read {'/'.join(modalities)}")
    for modality in modalities:
        readers = [a for a in accounts if a.reads(modality)]
        if readers:
            chosen = sorted(readers, key=lambda a: (not a.approved_for_access, a.account_id))[0]
            return RouteDecision.to(
                chosen.account_id, f"{chosen.company_name} reads {modality} for this practice"
            )
    offers = "; ".join(
        f"{a.company_name} reads {', '.join(a.account_modalities or a.company_modalities) or 'nothing'}"
        for a in accounts
    )
    return RouteDecision.refuse(
        f"no company this practice has an account with reads {'/'.join(modalities)} ({offers})"
    )


@hookimpl
def vethub_route_case(
    case: CaseRequest, study: StudyFacts, accounts: Sequence[AccountFacts]
) -> RouteDecision:
    return route(study, accounts)
