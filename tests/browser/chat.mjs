// One chat session in a real browser (Debian's chromium via playwright-core), driven by tests/test_browser.py.
// Usage: node chat.mjs '<json>' with {url, key, question, upload?, out}. Writes out/chat.png and out/page.json:
// the page's text and the citation's DOM at the moment of the screenshot, and the answer's text as it streamed.
import { chromium } from "playwright-core";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const args = JSON.parse(process.argv[2]);
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run"];
const report = { steps: [], stream: [] };
const step = (name) => { report.steps.push({ name, at: Date.now() }); console.error(`step: ${name}`); };

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: FLAGS, headless: true });
const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
page.setDefaultTimeout(args.timeout_ms ?? 60000);
try {
  await page.goto(args.url);
  step("opened");
  await page.getByLabel("API key", { exact: true }).fill(args.key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Signed in as").waitFor();
  step("signed in");
  report.empty_notice = await page.getByText("No documents in").waitFor({ timeout: 10000 })
    .then(() => true, () => false);

  if (args.upload) {
    await page.locator('[data-testid="stFileUploader"] input[type="file"]').setInputFiles(args.upload);
    await page.getByText(/indexed, \d+ chunks?/).waitFor({ timeout: args.upload_timeout_ms ?? 180000 });
    report.upload_text = await page.locator('[data-testid="stSidebar"]').innerText();
    step("uploaded");
    await page.getByText("No documents in").waitFor({ state: "detached" });
  }

  const input = page.locator('[data-testid="stChatInputTextArea"]');
  await input.fill(args.question);
  await input.press("Enter");
  step("asked");
  // Sample the answer while it grows: a streamed answer shows several lengths before its final text.
  const assistant = page.locator('[data-testid="stChatMessage"]').last();
  const timings = page.getByText("⏱");
  const deadline = Date.now() + (args.answer_timeout_ms ?? 120000);
  while (Date.now() < deadline) {
    const text = await assistant.innerText().catch(() => "");
    if (text && text !== report.stream.at(-1)) report.stream.push(text);
    if (await timings.count()) break;
    await page.waitForTimeout(30);
  }
  await timings.first().waitFor({ timeout: 5000 });
  report.answer = await assistant.innerText();
  step("answered");

  const citation = assistant.getByRole("button", { name: /^\[\d+\]/ }).first();
  report.citation_label = await citation.innerText();
  await citation.click();
  const popover = page.locator('[data-testid="stPopoverBody"]').last();
  await popover.getByText("Source").waitFor();
  step("citation opened");

  await page.screenshot({ path: join(args.out, "chat.png"), fullPage: true });
  // read at the moment of the screenshot: what the picture shows
  report.page_text = await page.locator("body").innerText();
  report.citation_text = await popover.innerText();
  report.citation_html = await popover.innerHTML();
} catch (error) {
  report.error = String(error);
  await page.screenshot({ path: join(args.out, "failure.png"), fullPage: true }).catch(() => {});
  report.page_text = await page.locator("body").innerText().catch(() => "");
} finally {
  writeFileSync(join(args.out, "page.json"), JSON.stringify(report, null, 2));
  await browser.close();
}
process.exit(report.error ? 1 : 0);
