// Mirror chat page: keeps the conversation, POSTs its last turns to /chat (the chat
// command forwards them to onmt_server), shows the reply; "Another response" asks the
// sampling model entry again for the same history (a new z). A reply is shown as text
// (data.response) and kept in the history as the model's own tokens (data.tokens).
"use strict";
const conf = { turns: 2, maxTurnChars: 500 };
const history = [];  // alternating user turns as typed / bot turns as tokens
let lastBot = null;  // the bubble of the latest reply, while it answers history's end
let samples = 0;
const $ = (id) => document.getElementById(id);

function bubble(who, text) {
  const div = document.createElement("div");
  div.className = "msg " + who;
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  div.appendChild(span);
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function setTag(div, text) {
  let tag = div.querySelector(".tag");
  if (!tag) {
    tag = document.createElement("span");
    tag.className = "tag";
    div.appendChild(tag);
  }
  tag.textContent = text;
}

function status(text, isError) {
  $("status").textContent = text || "";
  $("status").className = isError ? "error" : "";
}

function busy(on) {
  $("send").disabled = on;
  $("input").disabled = on;
  $("another").disabled = on || lastBot === null;
}

async function ask(turns, another) {
  const resp = await fetch("chat", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ history: turns.slice(-conf.turns), another: another }),
  });
  let data;
  try { data = await resp.json(); } catch (e) { data = { error: "HTTP " + resp.status }; }
  if (!resp.ok) throw new Error(data.error || "HTTP " + resp.status);
  return data;
}

async function send(event) {
  event.preventDefault();
  const text = $("input").value.trim();
  if (!text) { status("Type a turn first.", true); return; }
  history.push(text);
  const mine = bubble("user", text);
  $("input").value = "";
  lastBot = null;
  busy(true);
  status("…");
  try {
    const data = await ask(history, false);
    history.push(data.tokens);
    lastBot = bubble("bot", data.response);
    samples = 0;
    setTag(lastBot, "z = prior mean");
    status("");
  } catch (err) {
    history.pop();  // the turn was not answered: give it back for editing
    mine.remove();
    $("input").value = text;
    status(err.message, true);
  } finally {
    busy(false);
    $("input").focus();
  }
}

async function another() {
  if (lastBot === null) return;
  busy(true);
  status("…");
  try {
    const data = await ask(history.slice(0, -1), true);
    let alts = lastBot.querySelector(".alts");
    if (!alts) {
      alts = document.createElement("div");
      alts.className = "alts";
      lastBot.appendChild(alts);
    }
    const old = document.createElement("div");
    old.textContent = lastBot.querySelector(".text").textContent;
    alts.appendChild(old);
    history[history.length - 1] = data.tokens;
    lastBot.querySelector(".text").textContent = data.response;
    samples += 1;
    setTag(lastBot, "z sampled from the prior (#" + samples + ")");
    status("");
  } catch (err) {
    status(err.message, true);
  } finally {
    busy(false);
  }
}

function reset() {
  history.length = 0;
  lastBot = null;
  $("log").textContent = "";
  status("");
  busy(false);
}

fetch("config").then((r) => r.json()).then((c) => {
  conf.turns = c.turns;
  conf.maxTurnChars = c.max_turn_chars;
  $("turns").textContent = c.turns;
  $("input").maxLength = c.max_turn_chars;
}).catch(() => status("could not read /config", true));

$("form").addEventListener("submit", send);
$("another").addEventListener("click", another);
$("reset").addEventListener("click", reset);
