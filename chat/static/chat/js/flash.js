// Django's messages ("Room created"): each can be dismissed, and a success
// message fades by itself after a few seconds unless the pointer or the
// keyboard focus is on it. Loaded by base.html only when there are messages.

const FADE_AFTER_MS = 6000;
const FADE_MS = 400;

function dismiss(flash) {
  flash.classList.add("flash--leaving");
  setTimeout(() => {
    const area = flash.parentElement;
    flash.remove();
    if (area && !area.querySelector(".flash")) area.remove();
  }, FADE_MS);
}

for (const flash of document.querySelectorAll(".flash-area .flash")) {
  const close = flash.querySelector(".flash__close");
  if (close) {
    close.hidden = false;
    close.addEventListener("click", () => dismiss(flash));
  }
  if (!flash.classList.contains("flash-success")) continue;
  let timer = setTimeout(() => dismiss(flash), FADE_AFTER_MS);
  const hold = () => clearTimeout(timer);
  const resume = () => {
    clearTimeout(timer);
    if (!flash.matches(":hover") && !flash.contains(document.activeElement)) timer = setTimeout(() => dismiss(flash), FADE_AFTER_MS);
  };
  flash.addEventListener("mouseenter", hold);
  flash.addEventListener("focusin", hold);
  flash.addEventListener("mouseleave", resume);
  flash.addEventListener("focusout", resume);
}
