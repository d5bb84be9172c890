#!/usr/bin/env node
// Takes locks with the npm `redlock` package so the Rust integration tests can prove
// that a lock held by a Node service blocks this project, and the other way round.
//
//   node redlock-cli.js hold <redisPort> <resource> <ttlMs>
//     prints {"acquired":true,"value":"…"} or {"acquired":false,"error":"…"};
//     while holding, a stdin line `release` (or stdin EOF) releases the lock and
//     prints {"released":true} or {"released":false,"error":"…"}.
//   node redlock-cli.js try <redisPort> <resource> <ttlMs>
//     one attempt; releases at once when it succeeds.
//
// Output is one JSON object per line on stdout. Exit 0 whenever the protocol ran
// (a refused lock is a result, not a failure); {"error":"…"} and exit 1 otherwise.
'use strict';

const readline = require('readline');
const Redis = require('ioredis');
const Redlock = require('redlock').default;

// process.stdout is synchronous for pipes on Linux, so process.exit() never
// truncates a line the test is waiting for.
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const messageOf = (err) => (err && err.message) || String(err);

function parseArgs(argv) {
  const [mode, port, resource, ttl] = argv;
  const portNum = Number(port);
  const ttlNum = Number(ttl);
  if (!['hold', 'try'].includes(mode) || !Number.isInteger(portNum) || !resource ||
      !Number.isInteger(ttlNum) || ttlNum <= 0) {
    throw new Error('usage: redlock-cli.js hold|try <redisPort> <resource> <ttlMs>');
  }
  return { mode, port: portNum, resource, ttl: ttlNum };
}

async function main() {
  const { mode, port, resource, ttl } = parseArgs(process.argv.slice(2));

  // No keyPrefix and DB 0: either would silently move the lock key away from the
  // one the Rust side uses. No reconnects and no offline queue, so a missing Redis
  // fails fast as an error instead of hanging the test.
  const client = new Redis({
    host: '127.0.0.1',
    port,
    db: 0,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    retryStrategy: () => null,
  });
  // connect() only rejects with "Connection is closed."; keep the socket error
  // (e.g. ECONNREFUSED) so a failing test says why.
  let socketError;
  client.on('error', (err) => { socketError = err; });
  await client.connect().catch((err) => {
    throw new Error(`redis 127.0.0.1:${port}: ${messageOf(socketError || err)}`);
  });

  // retryCount 0: one attempt, like a poller that skips a locked streamer this round.
  const redlock = new Redlock([client], { retryCount: 0 });

  let lock;
  try {
    lock = await redlock.acquire([resource], ttl);
  } catch (err) {
    say({ acquired: false, error: messageOf(err) });
    await client.quit();
    return 0;
  }
  say({ acquired: true, value: lock.value });

  if (mode === 'try') {
    await lock.release();
    await client.quit();
    return 0;
  }

  // Hold until told to release; EOF counts too, so a test that drops the child's
  // stdin never leaves a lock behind for the next test.
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    let done = false;
    const finish = async () => {
      if (done) return;
      done = true;
      rl.close();
      try {
        await lock.release();
        say({ released: true });
      } catch (err) {
        // An expired or stolen lock cannot be released; the test wants to see that.
        say({ released: false, error: messageOf(err) });
      }
      await client.quit().catch(() => {});
      resolve(0);
    };
    rl.on('line', (line) => {
      if (line.trim() === 'release') finish();
    });
    rl.on('close', finish);
  });
}

main().then(
  (code) => process.exit(code),
  (err) => {
    say({ error: messageOf(err) });
    process.exit(1);
  },
);
