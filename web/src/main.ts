// The web console: one page that talks gRPC-Web to the public API through Envoy with the buf-generated client.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { GenerateRequestSchema, GenerateResponse, Model } from "./gen/llmorch/v1/orchestrator_pb.js";
import { DisconnectPolicy, OrchestratorService } from "./gen/llmorch/v1/orchestrator_pb.js";
import { FinishReason, HealthState, ModelType } from "./gen/llmorch/v1/types_pb.js";

const MODELS_REFRESH_MS = 3000;

// Same origin as the page (Envoy serves both, so no CORS is involved); `?api=http://host:8080` overrides it for a
// console served from a dev server.
const apiBase = new URLSearchParams(window.location.search).get("api") ?? window.location.origin;
// Every call carries the API key the user typed, kept in this browser's storage (never in the page's URL).
const API_KEY_STORAGE = "llmorch.apiKey";
const withApiKey: Interceptor = (next) => async (request) => {
  const key = localStorage.getItem(API_KEY_STORAGE);
  if (key) request.header.set("authorization", `Bearer ${key}`);
  return next(request);
};
const transport = createGrpcWebTransport({ baseUrl: apiBase, useBinaryFormat: true, interceptors: [withApiKey] });
const client = createClient(OrchestratorService, transport);

function el<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`missing #${id}`);
  return found as T;
}

const ui = {
  apiKey: el<HTMLInputElement>("api-key"),
  form: el<HTMLFormElement>("ask-form"),
  model: el<HTMLSelectElement>("model"),
  collection: el<HTMLInputElement>("collection"),
  topK: el<HTMLInputElement>("top-k"),
  maxTokens: el<HTMLInputElement>("max-tokens"),
  question: el<HTMLTextAreaElement>("question"),
  ask: el<HTMLButtonElement>("ask"),
  cancel: el<HTMLButtonElement>("cancel"),
  models: el<HTMLUListElement>("models"),
  modelsUpdated: el("models-updated"),
  status: el("status"),
  answer: el("answer"),
  provenance: el("provenance"),
  citations: el<HTMLOListElement>("citations"),
};

function describeError(error: unknown): string {
  const err = ConnectError.from(error);
  return `${Code[err.code] ?? err.code}: ${err.rawMessage}`;
}

function setStatus(text: string, isError = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

function healthLabel(health: HealthState): [string, string] {
  if (health === HealthState.SERVING) return ["serving", "serving"];
  if (health === HealthState.NOT_SERVING) return ["not serving", "not-serving"];
  return ["unknown", ""];
}

function renderModels(models: Model[]): void {
  ui.models.replaceChildren();
  const llms = models.filter((m) => m.modelType !== ModelType.EMBEDDING);
  for (const model of models) {
    const [label, cls] = healthLabel(model.health);
    const li = document.createElement("li");
    li.dataset.modelId = model.modelId;
    const name = document.createElement("span");
    const dot = document.createElement("span");
    dot.className = `dot ${cls}`;
    name.append(dot, `${model.modelId}${model.isDefault ? " (default)" : ""}`);
    const load = document.createElement("span");
    load.className = "muted";
    const kind = model.modelType === ModelType.EMBEDDING ? "embedding · " : "";
    load.textContent = `${kind}${label} · ${model.inFlight}/${model.capacity} busy · queue ${model.queueDepth}`;
    li.append(name, load);
    ui.models.append(li);
  }
  if (models.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "no models registered";
    ui.models.append(li);
  }
  // Keep the user's choice across refreshes; only the option labels (health) change.
  const chosen = ui.model.value;
  const options = [new Option("automatic (router decides)", "")];
  for (const model of llms) {
    const id = model.modelId;
    const [label] = healthLabel(model.health);
    options.push(new Option(`${id} — ${label}`, id));
  }
  ui.model.replaceChildren(...options);
  ui.model.value = options.some((o) => o.value === chosen) ? chosen : "";
}

async function refreshModels(): Promise<void> {
  try {
    const reply = await client.listModels({}, { timeoutMs: 2500 });
    renderModels(reply.models);
    ui.modelsUpdated.textContent = `· updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    ui.modelsUpdated.textContent = `· ${describeError(error)}`;
  }
}

function buildRequest(): MessageInitShape<typeof GenerateRequestSchema> {
  const collection = ui.collection.value.trim();
  const request: MessageInitShape<typeof GenerateRequestSchema> = {
    messages: [{ role: "user", content: ui.question.value.trim() }],
    modelId: ui.model.value,
    sampling: { maxTokens: Number(ui.maxTokens.value) || 128 },
    // The Cancel button aborts the stream; this makes that cancel the request too and free the model.
    onDisconnect: DisconnectPolicy.CANCEL,
  };
  if (collection) request.rag = { collection, topK: Number(ui.topK.value) || 5 };
  return request;
}

// The proto documents each reason; users read these words.
const FINISH_REASONS: Record<FinishReason, string> = {
  [FinishReason.UNSPECIFIED]: "unknown",
  [FinishReason.STOP]: "stop (the model ended its answer or a stop string matched)",
  [FinishReason.LENGTH]: "length (max tokens reached)",
  [FinishReason.CANCELLED]: "cancelled",
};

function renderFinal(result: GenerateResponse): void {
  const p = result.provenance;
  ui.answer.textContent = result.text;
  el("p-model").textContent = p?.modelId ?? "";
  el("p-reason").textContent = p?.selectionReason ?? "";
  el("p-fallbacks").textContent = p?.fallbacks.length
    ? p.fallbacks.map((f) => `${f.modelId} (${f.reason})`).join("; ")
    : "none";
  el("p-usage").textContent = p?.usage
    ? `${p.usage.promptTokens} prompt + ${p.usage.completionTokens} completion tokens`
    : "";
  const t = p?.timings;
  el("p-timings").textContent = t
    ? `total ${t.totalMs.toFixed(0)} ms · first token ${t.timeToFirstTokenMs.toFixed(0)} ms · ` +
      `queue ${t.queueWaitMs.toFixed(0)} ms · retrieval ${t.retrievalMs.toFixed(0)} ms`
    : "";
  el("p-finish").textContent = FINISH_REASONS[result.finishReason] ?? "unknown";
  el("p-ids").textContent = `${result.requestId} / ${p?.workflowId ?? ""}`;
  ui.provenance.hidden = false;
  ui.citations.replaceChildren();
  for (const c of p?.citations ?? []) {
    const li = document.createElement("li");
    const head = document.createElement("div");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = ` score ${c.score.toFixed(3)}`;
    head.append(`${c.source} · ${c.chunkId}`, score);
    const quote = document.createElement("blockquote");
    quote.textContent = c.text;
    li.append(head, quote);
    ui.citations.append(li);
  }
  if (!p?.citations.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "none (no collection given)";
    ui.citations.append(li);
  }
}

async function ask(request: MessageInitShape<typeof GenerateRequestSchema>): Promise<void> {
  const abort = new AbortController();
  ui.cancel.onclick = () => abort.abort();
  ui.ask.disabled = true;
  ui.cancel.disabled = false;
  ui.answer.textContent = "";
  ui.answer.classList.add("streaming");
  ui.provenance.hidden = true;
  ui.citations.replaceChildren();
  setStatus("Starting…");
  let deltas = 0;
  try {
    for await (const event of client.generateStream({ request }, { signal: abort.signal })) {
      switch (event.event.case) {
        case "selected": {
          const s = event.event.value;
          // After a fallback the next model continues the text; only a reset event voids it.
          setStatus(`Generating with ${s.modelId} (${s.reason}, attempt ${s.attempt})…`);
          break;
        }
        case "delta":
          deltas += 1;
          ui.answer.append(event.event.value);
          ui.answer.dataset.deltas = String(deltas);
          break;
        case "reset":
          ui.answer.textContent = "";
          setStatus(`Restarting: ${event.event.value.reason}…`);
          break;
        case "completed":
          renderFinal(event.event.value);
          setStatus(`Done: ${deltas} streamed chunks, request ${event.requestId}.`);
          break;
      }
    }
  } catch (error) {
    setStatus(abort.signal.aborted ? "Cancelled." : describeError(error), !abort.signal.aborted);
  } finally {
    ui.answer.classList.remove("streaming");
    ui.ask.disabled = false;
    ui.cancel.disabled = true;
  }
}

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!ui.question.value.trim()) {
    setStatus("Type a question first.", true);
    return;
  }
  void ask(buildRequest());
});

ui.apiKey.value = localStorage.getItem(API_KEY_STORAGE) ?? "";
ui.apiKey.addEventListener("change", () => {
  localStorage.setItem(API_KEY_STORAGE, ui.apiKey.value.trim());
  void refreshModels();
});

void refreshModels();
setInterval(() => void refreshModels(), MODELS_REFRESH_MS);
