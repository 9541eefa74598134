// Node ws echo server for interop tests.
// usage: node echo_server.js PORT [--no-context-takeover] [--no-compression]
// Prints "ready PORT" on stdout once listening on 127.0.0.1.
const path = require('path');
const { WebSocketServer } = require(path.join(__dirname, '../../target/peers/node_modules/ws'));

const args = process.argv.slice(2);
const port = Number(args[0]);
const noCtx = args.includes('--no-context-takeover');
const perMessageDeflate = args.includes('--no-compression') ? false : {
  serverNoContextTakeover: noCtx,
  clientNoContextTakeover: noCtx,
  threshold: 0,
};
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate, maxPayload: 64 * 1024 * 1024 });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
wss.on('listening', () => console.log('ready', wss.address().port));
