// The explorer's shell: the write key, the navigation and the hash router.
import { apiKey, clear, currentRoute, errorBox, h, own, setApiKey } from "./util.js";
import { evaluationPage } from "./evaluation.js";
import { findingPage } from "./finding.js";
import { inboxPage } from "./inbox.js";
import { pipelinePage } from "./pipeline.js";
import { streamsPage } from "./streams.js";

const PAGES = {
  "": inboxPage,
  finding: findingPage,
  streams: streamsPage,
  pipeline: pipelinePage,
  evaluation: evaluationPage,
};

const view = document.getElementById("view");
let teardown = null;

async function show() {
  let route;
  try {
    route = currentRoute();
  } catch (error) {
    clear(view, errorBox(new Error(`This address cannot be read (${error.message}): ${location.hash}`)));
    return;
  }
  const name = route.path[0] || "";
  const page = own(PAGES, name);
  document.querySelectorAll("[data-nav]").forEach((link) => {
    link.classList.toggle("active", link.dataset.nav === (name === "" || name === "finding" ? "inbox" : name));
  });
  if (teardown) teardown();
  teardown = null;
  clear(view, h("div.loading", {}, "Loading…"));
  if (!page) {
    clear(view, errorBox(new Error(`No page ${name}`)));
    return;
  }
  try {
    teardown = await page(view, route);
  } catch (error) {
    clear(view, errorBox(error));
  }
}

function keyForm() {
  const input = document.getElementById("api-key");
  const state = document.getElementById("key-state");
  const update = () => { state.textContent = apiKey() ? "set for this tab" : "not set: read only"; };
  input.value = apiKey();
  input.addEventListener("change", () => { setApiKey(input.value.trim()); update(); });
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    update();
  });
  update();
}

keyForm();
window.addEventListener("hashchange", show);
show();
