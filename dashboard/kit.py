"""The dashboard web kit: everything an app's dashboard views, forms and pages may use from dashboard.

The apps' pages share one shell (templates/dashboard/base.html, the team in the session) and a
few helpers. This module is their public interface: an app imports ``from dashboard.kit import
...`` and nothing else of dashboard (the .importlinter contract "web-kit" checks it). The modules
behind it are the kit's own business and may change.

- team_required: the "current team" preamble of a page (login, the no-team page, the membership);
- current_membership: the membership of the team chosen in the session, for pages without a team;
- object_or_404, paginate, query_without_page, parse_id, PAGE_SIZE: lookups, pages and query values;
- BackboneChoiceField: a form field that picks a backbone version;
- line_chart, LineChart: a server-side SVG line chart's geometry;
- layer_stack: a backbone's layer stack with its branch points, as SVG geometry.
"""

from dashboard.charts import LineChart, line_chart
from dashboard.context_processors import current_membership
from dashboard.fields import BackboneChoiceField
from dashboard.layer_stack import layer_stack
from dashboard.shortcuts import PAGE_SIZE, object_or_404, paginate, parse_id, query_without_page, team_required

__all__ = [
    "PAGE_SIZE",
    "BackboneChoiceField",
    "LineChart",
    "current_membership",
    "layer_stack",
    "line_chart",
    "object_or_404",
    "paginate",
    "parse_id",
    "query_without_page",
    "team_required",
]
