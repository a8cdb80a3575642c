"""The self-contained HTML page an annotator opens: one pair of responses at a time.

No external resources (it must work offline, from a file:// URL, in any browser); the
items are embedded as JSON and drawn with textContent, so response text cannot inject
markup. Turns and responses are shown detokenised (sacremoses, onmt_mirror/chat/text.py).
Choices are kept in localStorage (a reload loses nothing) and exported as a JSON file that
`python -m onmt_mirror.evaluate.human_kit aggregate` reads. Which system wrote which
response is not in the page: that lives in the kit's key.json.
"""
import html
import json

from onmt_mirror.chat.text import detokenize

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Response comparison: __ANNOTATOR__</title>
<style>
body { font-family: sans-serif; max-width: 50em; margin: 2em auto; padding: 0 1em; color: #222; }
.turn { margin: .3em 0; padding: .4em .6em; background: #f1f1f1; border-radius: 6px; }
.query { background: #dbe9f7; font-weight: bold; }
.responses { display: flex; gap: 1em; margin: 1em 0; }
.response { flex: 1; border: 2px solid #ccc; border-radius: 6px; padding: .6em; }
.response.chosen, button.chosen { border-color: #2a9d8f; background: #e3f4f1; }
button { font-size: 1em; padding: .4em 1em; margin: .2em; }
#status { color: #555; }
</style></head>
<body>
<h1>Which response fits the conversation better?</h1>
<p>Read the conversation, then pick the response that is the more appropriate next turn
(relevant, coherent, informative). Choose <em>Tie</em> if they are equally good or equally bad.
The last turn, in blue, is the one being answered. When you have answered every
item, press <em>Export</em> and send the downloaded file back.</p>
<p id="status"></p>
<div id="context"></div>
<div class="responses">
  <div class="response" id="response-A"><b>Response A</b><p id="text-A"></p></div>
  <div class="response" id="response-B"><b>Response B</b><p id="text-B"></p></div>
</div>
<div>
  <button id="choose-A">A is better</button>
  <button id="choose-tie">Tie</button>
  <button id="choose-B">B is better</button>
</div>
<div>
  <button id="prev">&larr; Previous</button>
  <button id="next">Next &rarr;</button>
  <button id="export">Export</button>
</div>
<script type="application/json" id="kit-data">__DATA__</script>
<script>
"use strict";
const kit = JSON.parse(document.getElementById("kit-data").textContent);
const storeKey = "mirror-kit:" + kit.kit + ":" + kit.annotator;
const choices = JSON.parse(localStorage.getItem(storeKey) || "{}");
let position = 0;

function show() {
  const item = kit.items[position];
  const context = document.getElementById("context");
  context.replaceChildren();
  item.context.forEach(function (turn) {
    const div = document.createElement("div");
    div.className = "turn";
    div.textContent = turn;
    context.appendChild(div);
  });
  const query = document.createElement("div");
  query.className = "turn query";
  query.textContent = item.query;
  context.appendChild(query);
  document.getElementById("text-A").textContent = item.A;
  document.getElementById("text-B").textContent = item.B;
  const choice = choices[item.id];
  ["A", "B"].forEach(function (side) {
    document.getElementById("response-" + side).classList.toggle("chosen", choice === side);
  });
  ["A", "B", "tie"].forEach(function (c) {
    document.getElementById("choose-" + c).classList.toggle("chosen", choice === c);
  });
  const done = kit.items.filter(function (it) { return it.id in choices; }).length;
  document.getElementById("status").textContent =
    "Item " + (position + 1) + " of " + kit.items.length + " \u2014 " + done + " answered";
}

function choose(choice) {
  choices[kit.items[position].id] = choice;
  localStorage.setItem(storeKey, JSON.stringify(choices));
  if (position < kit.items.length - 1) position += 1;
  show();
}

function exportChoices() {
  const data = JSON.stringify({kit: kit.kit, annotator: kit.annotator, choices: choices}, null, 1);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([data], {type: "application/json"}));
  link.download = kit.kit + "_" + kit.annotator + ".json";
  document.body.appendChild(link);
  link.click();
  link.remove();
}

["A", "B", "tie"].forEach(function (c) {
  document.getElementById("choose-" + c).onclick = function () { choose(c); };
});
document.getElementById("prev").onclick = function () { position = Math.max(position - 1, 0); show(); };
document.getElementById("next").onclick = function () {
  position = Math.min(position + 1, kit.items.length - 1); show();
};
document.getElementById("export").onclick = exportChoices;
show();
</script>
</body></html>
"""


def render(kit_id, annotator, items):
    """items: [{id, context: [turns], query, A, B}] in the order this annotator sees them,
    as tokens; the page shows them detokenised ("yes , very much ." -> "yes, very much."),
    as people write, so that annotators judge the replies and not the tokenisation."""
    items = [dict(item, context=[detokenize(t) for t in item["context"]],
                  query=detokenize(item["query"]), A=detokenize(item["A"]),
                  B=detokenize(item["B"])) for item in items]
    data = json.dumps({"kit": kit_id, "annotator": annotator, "items": items}, ensure_ascii=False)
    data = data.replace("<", "\\u003c")  # no "</script>" can end the data block early
    return (TEMPLATE.replace("__ANNOTATOR__", html.escape(annotator))
            .replace("__DATA__", data))
