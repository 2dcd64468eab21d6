// Drives the web console in headless Debian Chromium through Envoy and prints what it saw as one JSON line.
// Usage: node web/e2e/console.spec.mjs <console-url> <screenshot.png> [question]
// The caller (tests/e2e/test_web_console.py) asserts on the JSON; this script fails only on browser-level problems.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { chromium } from "playwright-core";

const [url, screenshot, question = "What does the with statement do?", apiKey] = process.argv.slice(2);
const API_KEY = apiKey ?? "llmo_console_test_key";
if (!url || !screenshot) {
  console.error("usage: console.spec.mjs <url> <screenshot.png> [question] [api-key]");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const STEP_MS = 20_000;

const userDataDir = mkdtempSync(join(tmpdir(), "llmorch-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  viewport: { width: 1280, height: 860 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
  ],
});
const problems = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console: ${msg.text()}`);
  });
  // Every gRPC-Web call must carry the key typed into the console.
  const authorizations = new Set();
  page.on("request", (request) => {
    if (request.method() === "POST") authorizations.add(request.headers()["authorization"] ?? "");
  });
  await page.goto(url, { waitUntil: "load", timeout: STEP_MS });
  await page.fill("#api-key", API_KEY);
  await page.dispatchEvent("#api-key", "change");
  await page.reload({ waitUntil: "load", timeout: STEP_MS });
  const keptKey = await page.inputValue("#api-key");

  // The model list comes from ListModels over gRPC-Web and refreshes on its own.
  await page.waitForSelector("#models li[data-model-id]", { timeout: STEP_MS });
  const models = await page.$$eval("#models li[data-model-id]", (items) =>
    items.map((li) => ({ id: li.dataset.modelId, text: li.textContent })),
  );
  const modelOptions = await page.$$eval("#model option", (opts) => opts.map((o) => o.value));

  await page.fill("#collection", "docs");
  await page.fill("#top-k", "3");
  await page.fill("#max-tokens", "48"); // a short answer: the test is about the path, not the length
  await page.fill("#question", question);
  // Record every change to the answer box, so "deltas appeared before the final answer" is observed, not sampled.
  await page.evaluate(() => {
    const answer = document.getElementById("answer");
    const provenance = document.getElementById("provenance");
    window.__answerSnapshots = [];
    new MutationObserver(() => {
      window.__answerSnapshots.push({ text: answer.textContent, final: !provenance.hidden });
    }).observe(answer, { childList: true, characterData: true, subtree: true });
  });
  await page.click("#ask");

  await page.waitForSelector("#provenance:not([hidden])", { timeout: STEP_MS });
  const text = (id) => page.$eval(`#${id}`, (node) => node.textContent ?? "");
  const snapshots = await page.evaluate(() => window.__answerSnapshots);
  const result = {
    models,
    modelOptions,
    streamedMidway: snapshots.filter((snap) => !snap.final && snap.text).map((snap) => snap.text),
    deltas: Number(await page.$eval("#answer", (node) => node.dataset.deltas ?? 0)),
    answer: await text("answer"),
    status: await text("status"),
    model: await text("p-model"),
    reason: await text("p-reason"),
    fallbacks: await text("p-fallbacks"),
    usage: await text("p-usage"),
    citations: await page.$$eval("#citations li", (items) => items.map((li) => li.textContent ?? "")),
    problems,
    keptKey,
    authorizations: [...authorizations],
  };
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(result));
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
