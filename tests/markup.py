"""Read a table drawn as markup (components.html_table) the way the tests read Dash trees: each
element becomes a node with `className` and `children`, so the same walkers find texts and
classes in both."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

from dash import dcc


@dataclass
class Node:
    tag: str
    className: str = ""  # noqa: N815  (named as Dash components name it)
    title: str | None = None
    style: str | None = None
    children: list = field(default_factory=list)


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("root")
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        node = Node(tag, found.get("class") or "", found.get("title"), found.get("style"))
        self.stack[-1].children.append(node)
        self.stack.append(node)

    def handle_endtag(self, tag):
        while len(self.stack) > 1:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data):
        if data:
            self.stack[-1].children.append(data)


def tree(component):
    """The markup of a dcc.Markdown as nodes; any other component as it is."""
    if not isinstance(component, dcc.Markdown):
        return component
    builder = _TreeBuilder()
    builder.feed(component.children)
    builder.close()
    return builder.root
