// A plain Node.js HTTP app, written for one process and not changed for cohort:
// `cohort start examples/hello/app.js -i max` runs one copy per CPU, all serving port 3000.
const http = require('http');

const port = Number(process.env.PORT || 3000);
let served = 0;

http
  .createServer((req, res) => {
    served += 1;
    res.setHeader('content-type', 'text/plain');
    res.end(`hello from pid ${process.pid} (instance ${process.env.NODE_APP_INSTANCE || 0}, request ${served})\n`);
  })
  .listen(port, () => {
    console.log(`listening on :${port} (pid ${process.pid})`);
  });
