/* nbunits' Cockpit page. Everything it shows or does is an `nbunits` command with
 * --json, run as the logged-in admin (superuser when Cockpit grants it). No build step. */
"use strict";

const NBUNITS = "/usr/local/sbin/nbunits";
const SVG = "http://www.w3.org/2000/svg";
let selected = null; // {course, student, id}

function nbunits(...args) {
    return cockpit.spawn([NBUNITS, ...args], { superuser: "try", err: "message" });
}

async function json(...args) {
    return JSON.parse(await nbunits(...args, "--json"));
}

function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
}

function row(cells) {
    const tr = el("tr");
    cells.forEach(c => tr.append(c instanceof Node ? wrap(c) : el("td", String(c))));
    return tr;
}

function wrap(node) {
    const td = el("td");
    td.append(node);
    return td;
}

function size(bytes) {
    if (bytes === null || bytes === undefined) return "-";
    const units = ["B", "K", "M", "G"];
    let i = 0;
    while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
    return (i ? bytes.toFixed(1) : bytes) + units[i];
}

/* A bar chart in inline SVG: [[label, value], ...]. */
function bars(svg, data, format) {
    svg.replaceChildren();
    const width = +svg.getAttribute("width"), height = +svg.getAttribute("height");
    if (!data.length) {
        const t = document.createElementNS(SVG, "text");
        t.setAttribute("x", 10); t.setAttribute("y", 20); t.textContent = "nothing yet";
        svg.append(t);
        return;
    }
    const max = Math.max(...data.map(d => d[1]), 1);
    const step = width / data.length;
    data.forEach(([label, value], i) => {
        const h = (height - 30) * value / max;
        const r = document.createElementNS(SVG, "rect");
        r.setAttribute("x", i * step + 2); r.setAttribute("y", height - 15 - h);
        r.setAttribute("width", Math.max(step - 4, 1)); r.setAttribute("height", h);
        r.setAttribute("data-label", label); r.setAttribute("data-value", value);
        const title = document.createElementNS(SVG, "title");
        title.textContent = `${label}: ${format(value)}`;
        r.append(title);
        const v = document.createElementNS(SVG, "text");
        v.setAttribute("x", i * step + 2); v.setAttribute("y", height - 18 - h);
        v.textContent = format(value);
        const l = document.createElementNS(SVG, "text");
        l.setAttribute("x", i * step + 2); l.setAttribute("y", height - 3);
        l.textContent = label;
        svg.append(r, v, l);
    });
}

function fail(error) {
    const box = document.getElementById("error");
    box.textContent = String(error.message || error);
    box.hidden = false;
}

async function refresh() {
    document.getElementById("error").hidden = true;
    try {
        const [courses, states] = await Promise.all([json("course", "list"), json("status")]);
        const stats = await Promise.all(courses.filter(c => !c.error)
            .map(c => json("course", "stats", c.name)));
        const body = document.querySelector("#courses tbody");
        body.replaceChildren(...stats.map(s => row([
            s.course, courses.find(c => c.name === s.course).notebooks.length, s.provisioned,
            s.running, Object.values(s.starts_per_day).reduce((a, b) => a + b, 0)])));

        // Each student's current score, per notebook (nbunits course stats).
        const scored = stats.flatMap(s => Object.entries(s.scores).map(([notebook, n]) => row([
            s.course, notebook, n.count, `${n.median}/${n.maximum} (${n.median_percent}%)`])));
        document.querySelector("#scores tbody").replaceChildren(
            ...(scored.length ? scored : [row(["-", "no scores yet", "", ""])]));

        const perDay = {};
        stats.forEach(s => Object.entries(s.starts_per_day)
            .forEach(([day, n]) => { perDay[day] = (perDay[day] || 0) + n; }));
        bars(document.getElementById("starts-graph"),
             Object.keys(perDay).sort().map(d => [d.slice(5), perDay[d]]), String);

        const running = states.filter(s => ["running", "starting"].includes(s.state));
        bars(document.getElementById("memory-graph"),
             running.filter(s => s.memory).map(s => [s.student.slice(0, 8), s.memory]), size);
        document.querySelector("#students tbody").replaceChildren(...running.map(s => {
            const open = el("button", "Open", { type: "button", "data-student": s.student });
            open.addEventListener("click", () => select(s.course, s.student, s.id));
            return row([s.course, s.student, s.id || "-", s.state, s.since || "-",
                        size(s.memory), open]);
        }));
        document.getElementById("updated").textContent =
            "updated " + new Date().toLocaleTimeString();
    } catch (error) {
        fail(error);
    }
}

async function select(course, student, id) {
    selected = { course, student, id };
    document.getElementById("student-panel").hidden = false;
    document.getElementById("student-title").textContent =
        `${student}${id ? " (" + id + ")" : ""} in ${course}`;
    document.getElementById("done").textContent = "";
    try {
        const copies = await json("student", "show", course, student);
        document.getElementById("notebook").replaceChildren(
            ...copies.map(c => el("option", c.notebook, { value: c.notebook })));
        document.getElementById("logs").textContent =
            await nbunits("logs", course, student, "--lines", "200");
    } catch (error) {
        fail(error);
    }
}

async function act(args, message) {
    try {
        await nbunits(...args);
        await refresh();
        await select(selected.course, selected.student, selected.id);
        document.getElementById("done").textContent = message;  // once the page shows it
    } catch (error) {
        fail(error);
    }
}

document.getElementById("refresh").addEventListener("click", refresh);
document.getElementById("stop").addEventListener("click", () =>
    act(["student", "stop", selected.course, selected.student], "stopped"));
document.getElementById("reset").addEventListener("click", () => {
    const notebook = document.getElementById("notebook").value;
    act(["student", "reset", selected.course, selected.student, notebook],
        `${notebook} reset (the old copy is kept)`);
});
refresh();
