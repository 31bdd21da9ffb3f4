// The official `openai` npm client against `kvtier serve`, started here on 127.0.0.1 with an ephemeral port.
// Usage: node openai_client_test.mjs KVTIER_BINARY MODEL.gguf
// Exit codes: 0 passed, 1 failed, 77 skipped (node_modules absent: run `npm ci` in tests/server, which
// scripts/install_deps.sh --test does).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
if (!existsSync(join(here, 'node_modules', 'openai'))) {
  console.log('SKIP: tests/server/node_modules is absent (npm ci in tests/server)');
  process.exit(77);
}
const { default: OpenAI } = await import('openai');

const [binary, model] = process.argv.slice(2);
if (!binary || !model) {
  console.error('usage: node openai_client_test.mjs KVTIER_BINARY MODEL.gguf');
  process.exit(1);
}

// Starts a server and reads its port from the line it prints when listening.
async function startServer(slots) {
  const server = spawn(binary, ['serve', '-m', model, '--port', '0', '-np', String(slots), '-c', '512', '-t', '2',
                                '--chat-template', 'chatml', '--alias', 'tiny'],
                       { stdio: ['ignore', 'inherit', 'pipe'] });
  let log = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the server did not start:\n' + log)), 60000);
    server.stderr.on('data', (data) => {
      log += data;
      const m = /on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    server.on('exit', (code) => reject(new Error(`the server exited (${code}):\n${log}`)));
  });
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', maxRetries: 0 });
  // Stops it with SIGTERM; resolves to its exit code.
  const stop = () => {
    const exited = server.exitCode !== null ? Promise.resolve(server.exitCode)
                                             : new Promise((resolve) => server.on('exit', (c) => resolve(c)));
    server.kill('SIGTERM');
    return exited;
  };
  return { port, client, stop, log: () => log };
}

const main = await startServer(4);
const port = main.port;
const client = main.client;

let failures = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}
function equal(actual, expected, what) {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${what}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
  }
}

const messages = (text) => [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: text }];
const chatRequest = (text, n) => ({ model: 'tiny', messages: messages(text), max_tokens: n, temperature: 0 });

async function streamedChat(request, via = client) {
  let text = '';
  let finish = null;
  let usage = null;
  const stream = await via.chat.completions.create({ ...request, stream: true,
                                                        stream_options: { include_usage: true } });
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? '';
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  return { text, finish, usage };
}

try {
  await check('models.list() names the served model', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    equal(ids, ['tiny'], 'model ids');
  });

  await check('chat: streamed text equals the non-streamed text (greedy), usage and finish reason', async () => {
    const request = chatRequest('Tell me about the kernel.', 16);
    const plain = await client.chat.completions.create(request);
    const s = await streamedChat(request);
    equal(s.text, plain.choices[0].message.content, 'streamed text');
    equal(plain.choices[0].finish_reason, 'length', 'finish reason');
    equal(s.finish, 'length', 'streamed finish reason');
    equal(s.usage.completion_tokens, 16, 'streamed usage');
    equal(plain.usage.total_tokens, plain.usage.prompt_tokens + 16, 'usage total');
  });

  await check('completions: streamed text equals the non-streamed text', async () => {
    const request = { model: 'tiny', prompt: 'The Linux kernel', max_tokens: 12, temperature: 0 };
    const plain = await client.completions.create(request);
    let text = '';
    for await (const chunk of await client.completions.create({ ...request, stream: true })) {
      text += chunk.choices[0]?.text ?? '';
    }
    equal(text, plain.choices[0].text, 'streamed text');
  });

  await check('a repeated prefix is reported as cached_tokens', async () => {
    const request = chatRequest('What is a page table? Explain it in a few words.', 4);
    await client.chat.completions.create(request);
    const again = await client.chat.completions.create(request);
    const cached = again.usage.prompt_tokens_details.cached_tokens;
    if (!(cached >= again.usage.prompt_tokens - 1)) throw new Error(`cached_tokens ${cached}`);
  });

  await check('errors surface as the client\'s error types', async () => {
    try {
      await client.chat.completions.create({ ...chatRequest('x', 4), max_tokens: 0 });
      throw new Error('max_tokens 0 was accepted');
    } catch (e) {
      if (!(e instanceof OpenAI.BadRequestError)) throw e;
    }
    try {
      await client.chat.completions.create({ ...chatRequest('x', 4), model: 'no-such-model' });
      throw new Error('an unknown model was accepted');
    } catch (e) {
      if (!(e instanceof OpenAI.NotFoundError)) throw e;
    }
  });

  await check('4 concurrent greedy streams each equal their solo run', async () => {
    // Solo runs on fresh servers: the same (empty) cache history as the concurrent ones. A reused prefix is
    // evaluated in other pieces than a cold prompt, which may change the last bits of the logits (docs/server.md).
    const prompts = ['The kernel', 'In the beginning', 'A dictionary', 'Python lists'];
    const solo = [];
    for (const p of prompts) {
      const alone = await startServer(1);
      try {
        solo.push((await alone.client.chat.completions.create(chatRequest(p, 12))).choices[0].message.content);
      } finally {
        await alone.stop();
      }
    }
    const fresh = await startServer(4);
    try {
      const together = await Promise.all(prompts.map((p) => streamedChat(chatRequest(p, 12), fresh.client)));
      equal(together.map((s) => s.text), solo, 'concurrent texts');
    } finally {
      await fresh.stop();
    }
  });

  await check('aborting a stream cancels its request', async () => {
    const metric = async () => {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      return Number(/kvtier_requests_total\{outcome="cancelled"\} (\d+)/.exec(text)[1]);
    };
    const before = await metric();
    const controller = new AbortController();
    const stream = await client.chat.completions.create({ ...chatRequest('Tell me a long story.', 400), stream: true },
                                                        { signal: controller.signal });
    try {
      for await (const chunk of stream) { controller.abort(); }
    } catch (e) {
      if (!(e instanceof OpenAI.APIUserAbortError) && e.name !== 'AbortError') throw e;
    }
    for (let i = 0; i < 200 && (await metric()) === before; i++) await new Promise((r) => setTimeout(r, 50));
    equal(await metric(), before + 1, 'cancelled requests');
  });
} finally {
  const code = await main.stop();
  if (code !== 0) {
    failures++;
    console.log(`FAIL the server exited with ${code} after SIGTERM:\n${main.log()}`);
  }
}
console.log(failures === 0 ? 'all passed' : `${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
