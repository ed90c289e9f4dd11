"""The report's HTML: the page (its inline style and script), tables, notes and sections.

Everything a page needs is inside it: no link, script or font from elsewhere, so that it opens from disk
in any browser with no network. Text is escaped here (`esc`); the functions that take `html` take markup
that is already escaped.
"""
from html import escape

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#fafbfc}
main{max-width:1280px;margin:0 auto;padding:0 24px 60px}
header{background:#1f3b57;color:#fff;padding:18px 24px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.85}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #d8dee4;padding:8px 24px;z-index:2}
nav a{margin-right:16px;color:#1f5f99;text-decoration:none;white-space:nowrap}
section{margin-top:28px} h2{border-bottom:2px solid #1f3b57;padding-bottom:4px} h3{margin-bottom:6px}
table{border-collapse:collapse;margin:8px 0 14px;background:#fff;font-size:13.5px}
th,td{border:1px solid #d0d7de;padding:3px 8px;vertical-align:top} th{background:#eef2f6;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none} table.sortable th:hover{background:#dde5ee}
th[data-dir=asc]::after{content:" \\25B4"} th[data-dir=desc]::after{content:" \\25BE"}
.scroll{overflow-x:auto;max-width:100%}
.note{background:#fff8e1;border-left:4px solid #e0a800;padding:6px 10px;margin:8px 0}
.error{background:#fdecea;border-left:4px solid #c62828;padding:6px 10px;margin:8px 0}
.missing li{margin:2px 0} code{background:#eef2f6;padding:0 3px;border-radius:3px;font-size:90%}
figure{margin:10px 0} figure img{max-width:100%;height:auto;border:1px solid #d0d7de;background:#fff}
figcaption{font-size:13px;color:#57606a}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
details{margin:6px 0} summary{cursor:pointer;color:#1f5f99}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:6px 0;font-size:13px}
dl.kv dt{color:#57606a} dl.kv dd{margin:0;word-break:break-all;font-family:ui-monospace,monospace}
.neurons{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:10px;max-height:85vh;
 overflow-y:auto;padding:4px;border:1px solid #d0d7de;background:#f3f5f7}
.neuron{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 10px}
.neuron[hidden]{display:none} .neuron h4{margin:0 0 4px;font-size:14px}
.neuron .effect{font-size:12.5px;margin:4px 0}
.contexts{font-size:12.5px;border-top:1px dashed #d0d7de;margin-top:6px;padding-top:4px;color:#57606a}
.contexts ol{margin:2px 0;padding-left:18px;color:#1d232a}
.tok{white-space:pre;border-right:1px solid #e1e4e8;padding:0 1px;font-family:ui-monospace,monospace}
.tok.top{background:#ffd54f;font-weight:bold}
.ctx-value{font-weight:bold;margin-right:6px} .ctx-where{color:#57606a;margin-right:6px}
#neuron-filter{font-size:15px;padding:4px 8px;width:320px}
svg text{font:11px system-ui,sans-serif}
"""

SCRIPT = """
(function(){
  function value(td){
    var t=td.getAttribute('data-sort'); if(t===null) t=td.textContent.trim();
    var n=parseFloat(t.replace(/[,%+\\u2009]/g,'').replace('\\u2212','-'));
    return isNaN(n)?{s:t.toLowerCase()}:{n:n};
  }
  function compare(a,b){
    if('n' in a&&'n' in b) return a.n-b.n; if('n' in a) return -1; if('n' in b) return 1;
    return a.s<b.s?-1:a.s>b.s?1:0;
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    table.querySelectorAll('thead th').forEach(function(th,col){
      th.title='click to sort';
      th.addEventListener('click',function(){
        var dir=th.getAttribute('data-dir')==='asc'?'desc':'asc';
        table.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('data-dir');});
        th.setAttribute('data-dir',dir);
        var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(r,s){var c=compare(value(r.cells[col]),value(s.cells[col]));return dir==='asc'?c:-c;});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  var box=document.getElementById('neuron-filter');
  if(!box) return;
  var entries=Array.prototype.slice.call(document.querySelectorAll('.neuron'));
  var count=document.getElementById('neuron-count');
  function matches(e,term){
    var layer=+e.getAttribute('data-layer'), m;
    if((m=term.match(/^l?(\\d+)$/))) return layer===+m[1];
    if((m=term.match(/^l?(\\d+)-l?(\\d+)$/))) return layer>=+m[1]&&layer<=+m[2];
    if((m=term.match(/^l?(\\d+):(\\d+)$/))) return layer===+m[1]&&e.getAttribute('data-index')===m[2];
    return e.getAttribute('data-langs').split(' ').indexOf(term)>=0;
  }
  function filter(){
    var terms=box.value.trim().toLowerCase().split(/[\\s,]+/).filter(Boolean), shown=0;
    entries.forEach(function(e){
      var ok=terms.every(function(t){return matches(e,t);});
      e.hidden=!ok; if(ok) shown++;
    });
    count.textContent=shown+' of '+entries.length+' neurons shown';
  }
  box.addEventListener('input',filter);
  filter();
})();
"""


def esc(text):
    """Text (anything, made str) escaped for HTML, quotes included."""
    return escape(str(text), quote=True)


def is_number(cell):
    """Whether a table cell reads as a number (right aligned): 0.6594, +0.0092, 1,234, 65.86%, 911.7 (+802.6)."""
    text = str(cell).strip().replace(",", "").replace("%", "").lstrip("+-−")
    head = text.split(" ", 1)[0]
    try:
        float(head)
    except ValueError:
        return False
    return True


def table(header, rows, sortable=True, html_cells=(), table_id=None, bold=()):
    """A table: header (text), rows (text cells, escaped here; columns in html_cells are markup); bold:
    (row, column) pairs shown bold. Numbers are right aligned; sortable tables sort on a click on a header."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            text = cell if j in html_cells else esc("" if cell is None else cell)
            if (i, j) in bold:
                text = f"<b>{text}</b>"
            cells.append(f'<td class="num">{text}</td>' if j not in html_cells and is_number(cell) else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attrs = (' class="sortable"' if sortable else "") + (f' id="{esc(table_id)}"' if table_id else "")
    return (f'<div class="scroll"><table{attrs}><thead><tr>{head}</tr></thead><tbody>' + "\n".join(body)
            + "</tbody></table></div>")


def note(text, kind="note"):
    """A highlighted paragraph (kind: note or error) of plain text."""
    return f'<p class="{kind}">{esc(text)}</p>'


def details(summary, html, open_=False):
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{html}</details>"


def key_values(pairs):
    """A definition list of (key, value) pairs; values None are left out, dicts and lists shown as JSON-like text."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs if v is not None)
    return f'<dl class="kv">{items}</dl>'


def section(anchor, title, html):
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{html}\n</section>'


def page(title, subtitle, sections, missing):
    """The whole page: sections [(anchor, title, html)], missing: lines (plain text) saying what is not there."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    absent = ""
    if missing:
        absent = ('<section id="missing"><h2>Not in this report</h2><ul class="missing">'
                  + "".join(f"<li>{esc(m)}</li>" for m in missing) + "</ul></section>")
    body = "\n".join(section(a, t, h) for a, t, h in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{esc(title)}</title>
<style>{STYLE}</style></head>
<body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>
<nav>{nav}{'<a href="#missing">not in this report</a>' if missing else ''}</nav>
<main>
{absent}
{body}
</main>
<script>{SCRIPT}</script>
</body></html>
"""
