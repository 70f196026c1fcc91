// The page's two DOM helpers, shared by app.js and triggers.js.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export function showMessage(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
  if (node.classList.contains("ok") && text) { // confirmations fade; errors stay until fixed
    clearTimeout(node._fade);
    node._fade = setTimeout(() => { node.hidden = true; }, 8000);
  }
}
