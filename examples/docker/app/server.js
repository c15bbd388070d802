// A small Node.js HTTP service for the container example: it serves PORT (default 3000) and, on
// the SIGINT that cohort sends when the container is stopped, finishes in-flight requests first.
const http = require('http');

const port = Number(process.env.PORT || 3000);
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`hello from pid ${process.pid}\n`);
});

server.listen(port, () => console.log(`listening on :${port}`));

process.on('SIGINT', () => {
  console.log('SIGINT: closing the server');
  server.close(() => process.exit(0));
});
