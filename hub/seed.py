"""Upsert the companies, practices, accounts and calling AE titles declared in config."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.config import HubConfig
from hub.db.models import Account, CallingAE, Company, Practice


async def apply_config_entities(session: AsyncSession, config: HubConfig) -> None:
    """Make the database hold what config declares; entities onboarding created are untouched."""
    companies: dict[str, Company] = {}
    for c in config.companies:
        company = (await session.execute(select(Company).where(Company.slug == c.slug))).scalar_one_or_none()
        if company is None:
            company = Company(slug=c.slug, settings={})
            session.add(company)
        settings = dict(company.settings or {})
        settings["auto_approve"] = c.auto_approve
        if c.destination is not None:
            settings["dicom_destination"] = c.destination.model_dump()
        settings.update(reading_email=c.reading_email, turnaround_hours=dict(c.turnaround_hours),
                        report_ae=c.report_ae)
        company.name, company.email, company.modalities = c.name, c.email, list(c.modalities)
        company.settings, company.managed_by_config = settings, True
        companies[c.slug] = company

    practices: dict[str, Practice] = {}
    for p in config.practices:
        practice = (await session.execute(select(Practice).where(Practice.slug == p.slug))).scalar_one_or_none()
        if practice is None:
            practice = Practice(slug=p.slug)
            session.add(practice)
        practice.name, practice.email, practice.phone = p.name, p.email, p.phone
        practice.country, practice.timezone, practice.address = p.country, p.timezone, dict(p.address)
        practice.managed_by_config = True
        practices[p.slug] = practice
    await session.flush()

    for p in config.practices:
        for title in p.calling_aes:
            ae = (await session.execute(select(CallingAE).where(CallingAE.ae_title == title))).scalar_one_or_none()
            if ae is None:
                session.add(CallingAE(ae_title=title, practice_id=practices[p.slug].id, managed_by_config=True))
            else:
                ae.practice_id, ae.managed_by_config = practices[p.slug].id, True

    for a in config.accounts:
        practice, company = practices[a.practice], companies[a.company]
        account = (
            await session.execute(
                select(Account).where(Account.practice_id == practice.id, Account.company_id == company.id)
            )
        ).scalar_one_or_none()
        if account is None:
            account = Account(practice_id=practice.id, company_id=company.id)
            session.add(account)
        account.approved_for_access, account.modalities = a.approved_for_access, list(a.modalities)
        account.auto_submit, account.managed_by_config = a.auto_submit, True
    await session.flush()
