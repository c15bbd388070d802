// Prints cfg.lines numbered lines to stdout with console.log, one call per line, as fast as it can
// (what a chatty app does), framed by "start <epoch ms>" and "end", then stays alive so that no manager
// restarts it.
'use strict';
const fs = require('fs');
const path = require('path');
const cfg = JSON.parse(fs.readFileSync(path.join(__dirname, 'bench.json'), 'utf8'));
const N = cfg.lines;
console.log('start ' + Date.now());
for (let i = 0; i < N; i++) console.log('line ' + i);
console.log('end');
setInterval(() => {}, 1 << 30);
