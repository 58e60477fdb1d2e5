// The questionnaire page: plain JavaScript, no framework, nothing loaded from elsewhere.
// Every answer is sent to /api/evaluate; the server (the knowledge base's engine) decides the result and
// which questions still matter. Unanswered means "not known", never "no".
"use strict";

const state = { answers: {}, audience: "clinician", seq: 0 };
const WORDS = {
  clinician: { yes: "Yes", no: "No", unknown: "Not known", actions: "Actions", warnings: "Warnings", why: "Why (rules that fired)",
               questions: "Questions", more: "Other questions (no answer would change the result now)", could: "Could change the result: ",
               help: "Alarm questions come first. Only questions whose answer could still change the result are shown; leave a question on “Not known” if it was not asked.",
               alarm: "Alarm question · " },
  patient: { yes: "Yes", no: "No", unknown: "I don't know", actions: "What to do", warnings: "Good to know", why: "Why",
             questions: "Questions", more: "Other questions (your answer would not change the advice now)", could: "Why we ask: ",
             help: "The most important questions come first. Answer what you can; choose “I don't know” when you are not sure.",
             alarm: "Important · " },
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") node.className = value; else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

function fieldset(q) {
  const words = WORDS[state.audience];
  const legendId = `q-${q.fact}-legend`;
  const fs = el("fieldset", { class: q.alarm ? "question alarm" : "question", "data-fact": q.fact, "aria-describedby": q.why ? `q-${q.fact}-why` : null });
  const legend = el("legend", { id: legendId });
  if (q.alarm) legend.append(el("span", { class: "flag" }, words.alarm));
  legend.append(q.question);
  fs.append(legend);
  const options = q.type === "bool"
    ? [["true", words.yes], ["false", words.no], ["", words.unknown]]
    : [...q.values.map((v) => [v, v.replace(/_/g, " ")]), ["", words.unknown]];
  const current = q.answer === null || q.answer === undefined ? "" : String(q.answer);
  for (const [value, label] of options) {
    const id = `q-${q.fact}-${value || "unknown"}`;
    const input = el("input", { type: "radio", name: q.fact, id, value, checked: value === current });
    input.addEventListener("change", () => answer(q, value));
    fs.append(el("label", { for: id }, input, label));
  }
  if (q.why) fs.append(el("p", { class: "hint", id: `q-${q.fact}-why` }, words.could + q.why));
  return fs;
}

function answer(q, value) {
  if (value === "") delete state.answers[q.fact];
  else state.answers[q.fact] = q.type === "bool" ? value === "true" : value;
  refresh();
}

async function refresh() {
  const seq = ++state.seq;
  const focused = document.activeElement && document.activeElement.id;
  let data;
  try {
    const response = await fetch("/api/evaluate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ answers: state.answers, audience: state.audience }),
    });
    data = await response.json();
    if (!response.ok) throw new Error(data.detail || response.statusText);
  } catch (err) {
    const box = document.getElementById("error");
    box.textContent = `The result could not be updated: ${err.message}`;
    box.hidden = false;
    return;
  }
  if (seq !== state.seq) return; // a later answer is on its way
  document.getElementById("error").hidden = true;
  render(data);
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

function render(data) {
  const words = WORDS[state.audience];
  document.getElementById("title").textContent = data.title;
  document.getElementById("kb-question").textContent = data.question;
  const result = document.getElementById("result");
  result.className = `result ${data.indicator}`;
  result.dataset.urgency = data.urgency;
  result.dataset.complete = String(data.complete);
  document.getElementById("headline").textContent = data.headline;
  document.getElementById("urgency-text").textContent = data.urgency_text;
  const incomplete = document.getElementById("incomplete");
  const n = data.alarm_unanswered;
  const count = state.audience === "patient"
    ? `${n} important question${n === 1 ? "" : "s"} still to answer. `
    : `${n} alarm question${n === 1 ? "" : "s"} unanswered. `;
  incomplete.textContent = data.complete ? "" : count + data.incomplete_text; // the knowledge base's words
  incomplete.hidden = data.complete;
  const scope = document.getElementById("scope");
  scope.textContent = data.scope_text;
  scope.hidden = !data.scope_text;

  const actions = document.getElementById("actions");
  actions.replaceChildren(...data.actions.map((a) => el("li", { class: a.done ? "done" : null },
    el("strong", {}, a.label), ", ", el("span", { class: "window" }, a.done ? "done" : a.window), el("br"), a.text)));
  document.getElementById("actions-title").textContent = words.actions;
  document.getElementById("actions-block").hidden = data.actions.length === 0;

  const warnings = document.getElementById("warnings");
  warnings.replaceChildren(...data.warnings.map((w) => w.label ? el("li", {}, el("strong", {}, w.label), ": ", w.text) : el("li", {}, w.text)));
  document.getElementById("warnings-title").textContent = words.warnings;
  document.getElementById("warnings-block").hidden = data.warnings.length === 0;

  document.getElementById("why").replaceChildren(...data.why.map((t) => el("li", {}, t)));
  document.getElementById("why-title").textContent = words.why;
  // the rules' titles are for clinicians (as in the text report, a patient reads what to do, not the rule trace)
  document.getElementById("why-block").hidden = data.why.length === 0 || state.audience === "patient";

  document.getElementById("questions-title").textContent = words.questions;
  document.getElementById("questions-help").textContent = words.help;
  document.getElementById("questions").replaceChildren(...data.questions.map(fieldset));
  document.getElementById("more").replaceChildren(...data.more_questions.map(fieldset));
  document.getElementById("more-title").textContent = words.more;
  document.getElementById("more-block").hidden = data.more_questions.length === 0;
  document.getElementById("disclaimer").textContent = data.disclaimer;
}

document.addEventListener("DOMContentLoaded", () => {
  for (const radio of document.querySelectorAll("input[name=audience]")) {
    radio.addEventListener("change", () => { state.audience = radio.value; refresh(); });
  }
  refresh();
});
