"""Imports every module that defines tables, so Base.metadata is complete.

Each domain adds one import line here.
"""

import hub.accounts.models  # noqa: F401
import hub.clients.models  # noqa: F401
import hub.db.models  # noqa: F401
import hub.imaging.models  # noqa: F401
import hub.messaging.models  # noqa: F401
import hub.pims.models  # noqa: F401
import plugins.inbound.models  # noqa: F401
