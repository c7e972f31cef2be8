"""(being written)"""

from flowbuilder.node import Node

NODES: tuple[type[Node], ...] = ()
