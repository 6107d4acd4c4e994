// WebSocket interop with Node's ws library (a strict, independent client):
// exchanges text, binary, empty, large and fragmented messages and a ping
// with the echo location, then closes with 1000.  Prints one JSON line of
// results; exits non-zero on any mismatch.  Run by test_ws_protocol.py
// with NODE_PATH=tools/node/node_modules.
'use strict';

const WebSocket = require('ws');

const url = process.argv[2];
const ws = new WebSocket(url, { perMessageDeflate: false,
                                maxPayload: 1 << 20 });
const big = Buffer.alloc(65536, 0x61);
const text = 'κόσμε, 𝄞 and ascii';
const sent = [text, Buffer.from([0, 1, 2, 255]), '', big.toString(),
              'fragmented-' + 'z'.repeat(1000)];
const got = [];
const result = { echoed: 0, pong: false, closeCode: null, errors: [] };
const timer = setTimeout(() => { result.errors.push('timeout');
                                 finish(); }, 10000);

function finish() {
    clearTimeout(timer);
    console.log(JSON.stringify(result));
    process.exit(result.errors.length ? 1 : 0);
}

ws.on('open', () => {
    ws.send(sent[0]);
    ws.send(sent[1]);
    ws.send(sent[2]);
    ws.send(sent[3]);
    // the last one in three fragments
    const last = sent[4];
    ws.send(last.slice(0, 5), { fin: false });
    ws.send(last.slice(5, 500), { fin: false });
    ws.send(last.slice(500), { fin: true });
    ws.ping(Buffer.from('are you there'));
});

ws.on('pong', (data) => {
    result.pong = data.toString() === 'are you there';
});

ws.on('message', (data, isBinary) => {
    const i = got.length;
    const want = sent[i];
    const same = typeof want === 'string'
        ? (!isBinary && data.toString() === want)
        : (isBinary && Buffer.compare(data, want) === 0);
    if (!same) {
        result.errors.push('message ' + i + ' differs');
    }
    got.push(data);
    result.echoed = got.length;
    if (got.length === sent.length) {
        ws.close(1000, 'done');
    }
});

ws.on('close', (code) => {
    result.closeCode = code;
    if (code !== 1000) {
        result.errors.push('close code ' + code);
    }
    if (!result.pong) {
        result.errors.push('no pong');
    }
    finish();
});

ws.on('error', (err) => {
    result.errors.push(String(err));
    finish();
});
