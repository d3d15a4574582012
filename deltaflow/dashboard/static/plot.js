// Draws a learning task's metrics as one small line plot per metric (inline SVG), a point per
// validated round. Every label is put in as text, never as markup.
"use strict";

const DeltaflowPlot = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 420, HEIGHT = 220;
  const LEFT = 58, RIGHT = 14, TOP = 12, BOTTOM = 34;

  function node(tag, attributes, text) {
    const element = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function label(value) {
    return Math.abs(value) >= 1e4 || (value !== 0 && Math.abs(value) < 1e-3)
      ? value.toExponential(2) : String(Number(value.toPrecision(4)));
  }

  // One plot: `points` are [round, value] pairs in round order.
  function plot(name, points) {
    const rounds = points.map(p => p[0]), values = points.map(p => p[1]);
    let [x0, x1] = [Math.min(...rounds), Math.max(...rounds)];
    let [y0, y1] = [Math.min(...values), Math.max(...values)];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    const pad = (y1 - y0) * 0.06 || Math.abs(y0) * 0.1 || 1;
    [y0, y1] = [y0 - pad, y1 + pad];
    const x = r => LEFT + (r - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT);
    const y = v => TOP + (y1 - v) / (y1 - y0) * (HEIGHT - TOP - BOTTOM);

    const svg = node("svg", {width: WIDTH, height: HEIGHT, viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
                             role: "img", "data-metric": name, "data-points": points.length});
    svg.appendChild(node("title", {}, `${name} by round`));
    for (const v of [y0, (y0 + y1) / 2, y1]) {
      svg.appendChild(node("line", {class: "grid", x1: LEFT, x2: WIDTH - RIGHT, y1: y(v), y2: y(v)}));
      svg.appendChild(node("text", {class: "end", x: LEFT - 6, y: y(v) + 4}, label(v)));
    }
    const step = Math.max(1, Math.ceil(rounds.length / 10));
    rounds.filter((_, i) => i % step === 0).forEach(r => {
      svg.appendChild(node("text", {class: "middle", x: x(r), y: HEIGHT - BOTTOM + 16}, String(r)));
    });
    svg.appendChild(node("text", {class: "middle", x: (LEFT + WIDTH - RIGHT) / 2, y: HEIGHT - 4},
                         "round"));
    svg.appendChild(node("line", {class: "axis", x1: LEFT, x2: LEFT, y1: TOP, y2: HEIGHT - BOTTOM}));
    svg.appendChild(node("line", {class: "axis", x1: LEFT, x2: WIDTH - RIGHT,
                                  y1: HEIGHT - BOTTOM, y2: HEIGHT - BOTTOM}));
    svg.appendChild(node("polyline", {class: "line",
                                      points: points.map(([r, v]) => `${x(r)},${y(v)}`).join(" ")}));
    for (const [r, v] of points) {
      const point = node("circle", {class: "point", cx: x(r), cy: y(v), r: 3.5});
      point.appendChild(node("title", {}, `round ${r}: ${name} = ${label(v)}`));
      svg.appendChild(point);
    }
    const figure = document.createElement("figure");
    figure.className = "plot";
    const caption = document.createElement("figcaption");
    caption.textContent = name;
    figure.append(caption, svg);
    return figure;
  }

  // Replaces `container`'s content with a plot per metric of `rounds` (from /metrics).
  function draw(container, rounds) {
    const names = [...new Set(rounds.flatMap(r => Object.keys(r)))]
      .filter(n => n !== "round" && n !== "workers").sort();
    if (!names.length) return false;
    container.replaceChildren(...names.map(name => plot(name, rounds
      .filter(r => typeof r[name] === "number").map(r => [r.round, r[name]]))));
    return true;
  }

  return {draw};
})();
