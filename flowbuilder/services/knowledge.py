"""``ctx.knowledge``: the knowledge bases a node may open, write and search.

A node names where knowledge bases live with a ``location`` parameter: empty for the
knowledge store (``FLOWBUILDER_KNOWLEDGE_URI``, else ``FLOWBUILDER_HOME/knowledge``), or a
folder nodes may use, checked by the file-access policy
(:meth:`flowbuilder.files.FileAccess.knowledge_location`). What it gets back is a
:class:`~flowbuilder.knowledge.KnowledgeBases` there (see :mod:`flowbuilder.knowledge`
for writing documents and searching).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowbuilder.files import NodeFiles
    from flowbuilder.knowledge import KnowledgeBase, KnowledgeBases
    from flowbuilder.settings import Settings


class KnowledgeService:
    """Knowledge bases for one node execution (``ctx.knowledge``)."""

    def __init__(self, settings: Settings, files: Callable[[], NodeFiles]) -> None:
        self._settings, self._files = settings, files

    def bases(self, location: str = "", *, field: str = "location") -> KnowledgeBases:
        """The knowledge bases at ``location`` (the node's parameter ``field``; empty:
        the knowledge store). Blocking when a LanceDB database must be opened.

        Raises:
            FileAccessError: the file-access policy refuses ``location``.
        """
        from flowbuilder.knowledge import KnowledgeBases

        where = self._files().knowledge_location(location, field=field)
        return KnowledgeBases.from_settings(self._settings, where)

    def open(self, name: str, location: str = "", *, field: str = "location") -> KnowledgeBase:
        """The knowledge base ``name`` at ``location`` (see :meth:`bases`). Blocking.

        Raises:
            KnowledgeError: there is no such knowledge base (the message names those
                there are).
            FileAccessError: the policy refuses ``location``.
        """
        return self.bases(location, field=field).open(name)
