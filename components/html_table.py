"""Read-only tables drawn as one HTML string in one component.

Dash's renderer does work for every component on the page at every update it receives: a
17-attribute score table built from html.Tr/html.Td is ~250 components, and the selection,
comparison and detail tables together made the page ~1,500 components, most of a gesture's
browser time on a large run. These tables hold text and colour only (nothing to click), so each
is written here as markup and shown by one `dcc.Markdown` component. Every text and attribute
value is escaped here, so a group or attribute name can never become markup.
"""

from __future__ import annotations

from html import escape

from dash import dcc

TABLE_CLASSES = "table table-sm"


def element(tag: str, content: str | list[str] = "", **attributes) -> str:
    """`<tag attributes>content</tag>`. `content` is markup already (made by these functions or
    `text`); attribute values are escaped. `class_` writes `class`; None values are left out."""
    attrs = "".join(f' {"class" if k == "class_" else k}="{escape(str(v), quote=True)}"'
                    for k, v in attributes.items() if v is not None)
    inner = "".join(content) if isinstance(content, list) else content
    return f"<{tag}{attrs}>{inner}</{tag}>"


def text(value) -> str:
    """Plain text as markup: every character shown as itself."""
    return escape(str(value), quote=False)


def swatch_name(name: str, colour: str) -> str:
    """An attribute's colour swatch and its name, as a table cell's content."""
    return element("span", class_="swatch", style=f"background: {colour}") + text(name)


def html_table(head: list[str], body: list[str], class_name: str, hover: bool = True,
               ) -> dcc.Markdown:
    """One component showing a table. `head` and `body` are `<tr>` rows' markup."""
    classes = f"{TABLE_CLASSES}{' table-hover' if hover else ''} {class_name}"
    markup = element("table", [element("thead", head), element("tbody", body)], class_=classes)
    # One line, no blank line: Markdown keeps an HTML block as it is until a blank line.
    return dcc.Markdown(markup.replace("\n", " "), dangerously_allow_html=True,
                        className="html-table")
