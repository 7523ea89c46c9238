// Progressive enhancement only: every page works without JavaScript.
// Copy buttons: <button data-copy="ID"> copies the text of the element with that id.
document.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-copy]");
  if (!b) return;
  e.preventDefault();
  const el = document.getElementById(b.dataset.copy);
  if (!el || !navigator.clipboard) return;
  navigator.clipboard.writeText(el.textContent.trim()).then(() => {
    const old = b.textContent; b.textContent = "Copied"; setTimeout(() => (b.textContent = old), 1200);
  });
});
// Confirmation for destructive buttons: <button data-confirm="Really?">.
document.addEventListener("submit", (e) => {
  const b = e.submitter;
  if (b && b.dataset.confirm && !window.confirm(b.dataset.confirm)) e.preventDefault();
});
