"""Give every node and edge of graphviz's SVG a `<title>` that says what it is.

graphviz writes the DOT node name into each element's `<title>` and puts the `tooltip` on an inner
`<a xlink:title>`. Viewers and screen readers that use only `<title>` (the SVG 2 way) would show
`rule:red_flag.leg_weakness` and nothing more, so the tooltip text (the rule's condition, conclusions,
rationale and full citations) is copied into the `<title>`. The stable ids stay in the `id` attributes.
A pure text transform of graphviz's own output: the same SVG in gives the same SVG out.
"""

from __future__ import annotations

import re

_ELEMENT = re.compile(
    r'(<g id="[^"]*" class="(?:node|edge)\b[^"]*">\n<title>)[^<]*(</title>\n<g id="a_[^"]*"><a xlink:title="([^"]*)">)'
)


def titles_from_tooltips(svg: bytes) -> bytes:
    text = svg.decode("utf-8")
    return _ELEMENT.sub(lambda m: m.group(1) + m.group(3) + m.group(2), text).encode("utf-8")
