"""The report's Jinja2 template, stylesheet and script. Kept as Python strings, not package data
files, so a plain (non-editable) install of the package carries them. Autoescaping is on: every
value the template prints is escaped unless marked safe, and only the Vega bundle, the
stylesheet, the script and the charts' JSON (escaped by ``script_json``) are."""

STYLE = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --good: #1a7f37;
  --bad: #cf222e; --warn: #9a6700; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
  font: 14px/1.45 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial,
  sans-serif; }
main { max-width: 1360px; margin: 0 auto; padding: 20px 28px 48px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 12px; margin-bottom: 16px; }
h1 { font-size: 22px; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 14px 0 6px; }
.sub { color: var(--muted); }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12px;
  font-weight: 600; color: #fff; vertical-align: middle; }
.badge.ok, .badge.better { background: var(--good); } .badge.bad, .badge.worse { background: var(--bad); }
.badge.unclear, .badge.none, .badge.unknown, .badge.unchanged { background: #6e7781; }
.badge.better\\? { background: #57ab5a; } .badge.worse\\? { background: #e5534b; }
.glance { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: var(--soft); }
.card .big { font-size: 22px; font-weight: 600; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.failure { border: 2px solid var(--bad); background: #ffebe9; border-radius: 8px; padding: 12px 16px; }
.failure .reason { font-size: 18px; font-weight: 700; color: var(--bad); }
.failure pre { white-space: pre-wrap; word-break: break-word; margin: 8px 0 0; font-size: 13px; }
.warnings { border: 1px solid #d4a72c; background: #fff8c5; border-radius: 8px; padding: 8px 14px; margin-top: 12px; }
.warnings ul { margin: 4px 0; padding-left: 20px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: right; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
td.text { word-break: break-all; max-width: 520px; }
.iv { color: var(--muted); font-size: 12px; white-space: nowrap; }
.pass { color: var(--good); font-weight: 600; } .fail { color: var(--bad); font-weight: 600; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 0; }
.facts dt { color: var(--muted); } .facts dd { margin: 0; word-break: break-all; }
.charts { display: flex; flex-wrap: wrap; gap: 18px 28px; align-items: flex-start; }
figure { margin: 0; } figcaption { color: var(--muted); font-size: 12px; max-width: 460px; }
figure h3 { margin-top: 4px; }
.scroll { max-height: 420px; overflow: auto; display: inline-block; border: 1px solid var(--line);
  border-radius: 6px; } .scroll table { margin: 0; }
.scroll th { position: sticky; top: 0; }
tr.at-threshold td { background: #ddf4ff; font-weight: 600; }
.side { display: flex; flex-wrap: wrap; gap: 0 32px; align-items: flex-start; }
.side > section { min-width: 0; }
td.best { font-weight: 700; }
td[rowspan] { vertical-align: middle; border-right: 1px solid var(--line); }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
table.compact th, table.compact td { padding: 2px 8px; font-size: 13px; }
table.compact td:first-child { max-width: 320px; word-break: break-all; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[aria-sort="ascending"]::after { content: " ▲"; }
table.sortable th[aria-sort="descending"]::after { content: " ▼"; }
.verdict { font-size: 15px; margin: 6px 0; }
"""

# Embeds every chart whose spec sits in a <script type="application/json" data-chart=ID>,
# registers its view as window.modelevalViews[ID], and marks the page ready once all are drawn
# (tests and screenshot tools wait for body[data-ready="1"]).
SCRIPT = """
(function () {
  "use strict";
  window.modelevalViews = window.modelevalViews || {};
  var blocks = document.querySelectorAll('script[type="application/json"][data-chart]');
  var drawn = Array.prototype.map.call(blocks, function (block) {
    var id = block.getAttribute("data-chart");
    var spec = JSON.parse(block.textContent);
    var target = document.getElementById("chart-" + id);
    return vegaEmbed(target, spec, {mode: "vega-lite", actions: false, renderer: "svg"})
      .then(function (result) { window.modelevalViews[id] = result.view; });
  });
  Promise.all(drawn).then(function () { document.body.dataset.ready = "1"; },
    function (error) { document.body.dataset.ready = "error"; console.error(error); });
})();

// A sortable table's headings sort its rows: numbers by value (largest first on the first
// click), text in natural order ("2" before "10"); cells without a number go last.
(function () {
  "use strict";
  function number(cell) {
    var value = parseFloat(cell.textContent.replace(/,/g, ""));
    return isNaN(value) ? null : value;
  }
  function compare(column, text) {
    return function (upper, lower) {
      var first = upper.cells[column], second = lower.cells[column];
      if (text) {
        return first.textContent.localeCompare(second.textContent, undefined, {numeric: true});
      }
      var one = number(first), other = number(second);
      if (one === null || other === null) { return (one === null) - (other === null); }
      return one - other;
    };
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var headings = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headings, function (heading, column) {
      heading.title = "sort by " + heading.textContent;
      heading.addEventListener("click", function () {
        var text = heading.classList.contains("text");
        var now = heading.getAttribute("aria-sort");
        var order = now ? (now === "ascending" ? "descending" : "ascending")
          : (text ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).sort(compare(column, text));
        if (order === "descending") {
          var blank = rows.filter(function (row) { return !text && number(row.cells[column]) === null; });
          rows = rows.filter(function (row) { return blank.indexOf(row) < 0; }).reverse().concat(blank);
        }
        Array.prototype.forEach.call(headings, function (other) { other.removeAttribute("aria-sort"); });
        heading.setAttribute("aria-sort", order);
        var fragment = document.createDocumentFragment();
        rows.forEach(function (row) { fragment.appendChild(row); });
        body.appendChild(fragment);
      });
    });
  });
})();
"""

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ d.name }} · modeleval report</title>
<style>{{ style | safe }}</style>
</head>
<body>
<main>
{% macro iv(interval) -%}
{% if interval %}<span class="iv">[{{ interval.lower | num }}, {{ interval.upper | num }}]</span>{% endif %}
{%- endmacro %}
{% macro div(interval) -%}
{% if interval %}<span class="iv">[{{ interval.lower | signed }}, {{ interval.upper | signed }}]</span>{% endif %}
{%- endmacro %}
{% macro chart(c) -%}
<figure>
<h3>{{ c.title }}</h3>
<div id="chart-{{ c.id }}" class="chart" data-chart-id="{{ c.id }}"></div>
<script type="application/json" data-chart="{{ c.id }}">{{ c.spec | script_json }}</script>
<figcaption>{{ c.caption }}</figcaption>
</figure>
{%- endmacro %}
<header>
<h1>{{ d.name }}</h1>
<div class="sub">
{% if d.namespace %}namespace <b>{{ d.namespace }}</b> · {% endif %}
{% if d.schedule %}schedule <b>{{ d.schedule }}</b> · {% endif %}
attempt {{ d.attempt }} · finished {{ d.finished_at }} ·
<span class="badge {{ 'ok' if d.succeeded else 'bad' }}">{{ d.status }}</span>
</div>
</header>

{% if not d.succeeded %}
<section class="failure" id="failure">
<div class="reason">Failed: {{ d.reason or "no reason recorded" }}</div>
<pre>{{ d.message or "no message recorded" }}</pre>
{% if d.reason %}<p><b>What it means:</b> {{ d.reason.doc.meaning }}.<br>
<b>What to do:</b> {{ d.reason.doc.action }}.</p>{% endif %}
<div class="sub">{% if d.retryable %}Retryable: the operator retries this failure while
spec.backoffLimit allows.{% elif d.retryable is not none %}Not retryable.{% endif %}</div>
</section>
{% endif %}

{% if d.warnings %}
<section class="warnings" id="warnings"><b>Warnings</b>
<ul>{% for w in d.warnings %}<li>{{ w }}</li>{% endfor %}</ul>
</section>
{% endif %}

{% if d.metrics %}
<h2 id="glance">At a glance</h2>
<div class="glance">
{% if primary %}
<div class="card"><div class="label">{{ primary }} (candidate)</div>
<div class="big">{{ d.metrics[primary] | num }}</div>{{ iv(d.intervals.get(primary)) }}
{% if d.confidence %}<div class="sub">{{ "%g" | format(d.confidence.level * 100) }}% interval,
{{ d.confidence.resamples }} bootstrap resamples of {{ d.confidence.unit }}</div>{% endif %}
</div>
{% endif %}
<div class="card"><div class="label">gate</div>
{% if d.gate %}<div class="big {{ 'pass' if d.gate.passed else 'fail' }}">{{ "passed" if d.gate.passed else "failed" }}</div>
<div class="sub">{{ d.gate.rules | selectattr("passed") | list | length }} of {{ d.gate.rules | length }} rules hold</div>
{% else %}<div class="big">no gate</div><div class="sub">spec.gate sets none</div>{% endif %}
</div>
{% for c in comparisons %}
<div class="card"><div class="label">{{ c.model }} versus the baseline</div>
<div class="big">{{ c.delta | signed }} <span class="badge {{ c.verdict }}">{{ c.verdict }}</span></div>
{{ div(c.interval) }} <span class="sub">{{ c.metric }}</span>
</div>
{% endfor %}
{% if data and data.drift %}
<div class="card" id="drift-card"><div class="label">data drift</div>
<div class="big {{ 'fail' if data.drift.drifted else 'pass' }}">{{ "drifted" if data.drift.drifted else "no drift" }}</div>
<div class="sub">{{ data.drift.drifted_features | num }} of {{ data.drift.features | num }} features ({{ data.drift.share | percent }}; the dataset drifts at {{ data.drift.threshold | percent }}) · <a href="#drift">the drift</a></div>
</div>
{% endif %}
{% if worst_slice %}
<div class="card"><div class="label">worst slice ({{ worst_slice.metric }})</div>
<div class="big">{{ worst_slice.value | num }}</div>
<div class="sub">{{ worst_slice.slice }} = {{ worst_slice.name }}</div>
</div>
{% endif %}
</div>

<div class="side">
<section>
<h2 id="metrics">Metrics</h2>
<table class="metrics">
<tr><th>metric</th>{% for m in models %}<th>{{ m.name }}{% if m.role != m.name %}<br><span class="sub">{{ m.role }}</span>{% endif %}</th>{% endfor %}</tr>
{% for name in metric_names %}
<tr><td>{{ name }}</td>{% for m in models %}<td{% if best.get(name) == m.name %} class="best" title="best of the models"{% endif %}>{% if name in m.metrics %}{{ m.metrics[name] | num }}
{{ iv(m.intervals.get(name)) }}{% else %}<span class="sub">–</span>{% endif %}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% if models | length > 1 %}<div class="sub">Bold: the best model on the metric.</div>{% endif %}
</section>
{% if forest %}
<section>
<h2 id="comparison">Challengers against the champion</h2>
<div class="charts">{{ chart(forest) }}</div>
</section>
{% endif %}
</div>
{% endif %}

{% if gates %}
<h2 id="gate">Gate</h2>
<table class="gate">
<tr><th>model</th><th>gate</th><th>metric</th><th>value</th><th>baseline</th><th>change</th><th>rule</th><th class="text">why</th></tr>
{% for m in gates %}{% for r in m.gate.rules %}
<tr>{% if loop.first %}<td rowspan="{{ m.gate.rules | length }}">{{ m.name }}</td>
<td rowspan="{{ m.gate.rules | length }}" class="{{ 'pass' if m.gate.passed else 'fail' }}">{{ "passed" if m.gate.passed else "failed" }}</td>{% endif %}
<td>{{ r.metric }}</td><td>{{ r.value | num }}</td><td>{{ r.baseline | num }}</td>
<td>{% if r.baseline is not none %}{{ (r.value - r.baseline) | signed }}{% else %}<span class="sub">–</span>{% endif %}</td>
<td class="{{ 'pass' if r.passed else 'fail' }}">{{ "holds" if r.passed else "fails" }}</td>
<td class="text">{{ "every condition of the rule holds" if r.passed and r.message == "ok" else r.message }}</td></tr>
{% endfor %}{% endfor %}
</table>
{% endif %}

{% if task_charts or tables %}
<h2 id="curves">{{ task_title }}</h2>
<div class="charts">
{% for c in task_charts %}{{ chart(c) }}{% endfor %}
</div>
{% for t in tables %}
<h3>{{ t.title }}</h3>
{% if t.caption %}<div class="sub">{{ t.caption }}</div>{% endif %}
<div class="scroll"><table id="table-{{ t.id }}">
<tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr{% if t.marked == loop.index0 %} class="at-threshold"{% endif %}>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</table></div>
{% endfor %}
{% elif d.succeeded %}
<h2 id="curves">Curves</h2>
<p class="sub">This result has no curves (written before they existed, or with reports
turned off).</p>
{% endif %}

{% if slices %}
<h2 id="slices">Slices</h2>
{% for s in slices %}
<h3>{{ s.table.name }}</h3>
{% if s.table.values > s.table.rows | length %}<div class="sub">The {{ s.table.rows | length }} worst of its {{ s.table.values | num }} values.</div>{% endif %}
{% if s.chart %}<div class="charts">{{ chart(s.chart) }}</div>{% endif %}
<div class="scroll"><table class="slice">
<tr><th>value</th><th>rows</th>{% for metric in s.table.metrics %}<th>{{ metric }}</th>{% endfor %}</tr>
{% for r in s.table.rows %}
<tr><td class="text">{{ r.value }}</td><td>{{ r.rows | num }}</td>
{% for metric in s.table.metrics %}<td>{% if r.metrics.get(metric) is not none %}{{ r.metrics[metric] | num }} {{ iv(r.intervals.get(metric)) }}{% elif r.error %}<span class="sub">{{ r.error }}</span>{% else %}<span class="sub">–</span>{% endif %}</td>{% endfor %}</tr>
{% endfor %}
</table></div>
{% endfor %}
{% endif %}

{% if data and data.drift %}
{% set drift = data.drift %}
<h2 id="drift">Drift</h2>
<p class="verdict" id="drift-verdict"><span class="badge {{ 'bad' if drift.drifted else 'ok' }}">{{ "drifted" if drift.drifted else "no drift" }}</span>
{{ drift.drifted_features | num }} of {{ drift.features | num }} features drifted ({{ drift.share | percent }}); the dataset drifts when {{ drift.threshold | percent }} or more do.
Reference: <b>{{ drift.reference }}</b>.</p>
<div class="sub">A feature drifts when a measure passes its threshold: {{ drift.thresholds | join("; ") }}. In red: the measures that passed. Drifted features first, the largest PSI first; a heading sorts by its column.</div>
<div class="scroll"><table id="table-drift" class="sortable compact">
<thead><tr><th class="text">feature</th><th>PSI</th><th>Jensen-Shannon</th><th>KS</th><th>KS p-value</th><th class="text">drifted</th><th class="text">by</th></tr></thead>
<tbody>
{% for f in drift.rows %}<tr><td>{{ f.name }}</td><td{% if "psi" in f.by %} class="fail"{% endif %}>{{ f.psi | num }}</td><td{% if "jensenShannon" in f.by %} class="fail"{% endif %}>{{ f.jensen_shannon | num }}</td><td{% if "ks" in f.by %} class="fail"{% endif %}>{{ f.ks | num }}</td><td>{{ f.ks_p_value | num }}</td><td class="text{{ ' fail' if f.drifted }}">{{ "yes" if f.drifted else "no" }}</td><td class="text">{{ f.by | measures }}</td></tr>
{% endfor %}
</tbody></table></div>
{% endif %}

{% if data and data.facts %}
<h2 id="data">Data</h2>
<dl class="facts">{% for k, v in data.facts %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
{% if data.charts %}<div class="charts">{% for c in data.charts %}{{ chart(c) }}{% endfor %}</div>{% endif %}
{% if data.feature_charts %}
<h3>{{ "Features by drift, the largest PSI first" if data.drift else "Features, the most missing first" }}</h3>
<div class="sub">{{ data.feature_charts_caption }}</div>
<div class="charts">{% for c in data.feature_charts %}{{ chart(c) }}{% endfor %}</div>
{% endif %}
<h3>Features</h3>
<div class="sub">Every feature, in the dataset's order; a heading sorts by its column. Missing: NaN or absent values (their share of the rows);
min to std over the finite values; distinct: an estimate (HLL sketch); p1, median and p99 from the quantile sketch (KLL).</div>
<div class="scroll"><table id="table-features" class="sortable compact">
<thead><tr><th class="text">feature</th><th>rows</th><th>missing</th><th>infinities</th><th>zeros</th><th>min</th><th>max</th><th>mean</th><th>std</th><th>distinct</th><th>p1</th><th>median</th><th>p99</th></tr></thead>
<tbody>
{% for f in data.features %}<tr><td>{{ f.name }}</td><td>{{ f.rows | num }}</td><td>{{ f.missing_rate | share }}</td><td>{{ f.infinities | num }}</td><td>{{ f.zeros | num }}</td><td>{{ f.min | num }}</td><td>{{ f.max | num }}</td><td>{{ f.mean | num }}</td><td>{{ f.std | num }}</td><td>{{ f.distinct | round | int | num }}</td><td>{{ f.low | num }}</td><td>{{ f.median | num }}</td><td>{{ f.high | num }}</td></tr>
{% endfor %}
</tbody></table></div>
{% endif %}

<h2 id="dataset">Dataset</h2>
<dl class="facts">{% for k, v in dataset.facts %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>

<h2 id="run">Run</h2>
<dl class="facts">{% for k, v in run %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
{% if models | length > 1 %}
<h3>Models</h3>
<table><tr><th>name</th><th class="text">role</th><th class="text">URI</th><th class="text">fingerprint</th></tr>
{% for m in models %}<tr><td>{{ m.name }}</td><td class="text">{{ m.role }}</td><td class="text">{{ m.uri or "not recorded" }}</td><td class="text">{{ m.fingerprint or "not recorded" }}</td></tr>{% endfor %}
</table>
{% endif %}

<footer>modeleval report · {{ d.id }} · self-contained: opens offline, fetches nothing.</footer>
</main>
<script>{{ bundle | safe }}</script>
<script>{{ script | safe }}</script>
</body>
</html>
"""
