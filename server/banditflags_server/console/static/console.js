// banditflags console: confirmation dialogs and small conveniences. No framework, no build step.
"use strict";

document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-open]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.open);
    if (dialog) {
      dialog.showModal();
      const first = dialog.querySelector("input[name=reason]");
      if (first) first.focus();
    }
    return;
  }
  const closer = event.target.closest("[data-close]");
  if (closer) {
    const dialog = closer.closest("dialog");
    if (dialog) dialog.close();
  }
});

// One submit per click: a second click while the first request runs would repeat the change.
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  if (button) {
    setTimeout(() => { button.disabled = true; }, 0);
  }
});

// The exploration range and number inputs mirror each other.
for (const range of document.querySelectorAll("input[data-mirror]")) {
  const other = document.getElementById(range.dataset.mirror);
  if (!other) continue;
  range.addEventListener("input", () => { other.value = range.value; });
  other.addEventListener("input", () => { range.value = other.value; });
}

// The targeting editor: a rule shows the field of what it serves (a variant, or a split's weights);
// without the script both stay visible and the server reads the one the "Serves" picker names.
for (const picker of document.querySelectorAll("select[data-serve]")) {
  const rule = picker.closest("fieldset");
  const show = () => {
    for (const field of rule.querySelectorAll("[data-serve-field]")) {
      field.hidden = field.dataset.serveField !== picker.value;
    }
  };
  picker.addEventListener("change", show);
  show();
}
