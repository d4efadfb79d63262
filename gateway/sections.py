"""Which fixture sections make up a complete set, in validation order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.fixtures import Section


def all_sections() -> list[Section]:
    """Core (config, accounts, tokens), offers (segments, offers, subscribers, keywords, replies), then the rest."""
    from ivr import sections as ivr_sections
    from notifier import campaign_sections, core_sections, projects
    from offers import email_templates, ussd_menu
    from offers import sections as offer_sections

    return [*core_sections.SECTIONS, *offer_sections.SECTIONS, ussd_menu.SECTION, email_templates.SECTION,
            *ivr_sections.SECTIONS, *campaign_sections.SECTIONS, *projects.SECTIONS]


def build_extras(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """Runtime objects other domains build from their parsed sections (campaign book, IVR menus)."""
    from ivr import sections as ivr_sections
    from notifier import campaign_sections, projects

    return {"campaigns": campaign_sections.build_book(parsed), "ivr": ivr_sections.build_config(parsed),
            "projects": projects.build_book(parsed)}
