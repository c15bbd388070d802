// The same stack as cohort.toml, in PM2's format (cohort reads it; PM2 itself would ignore
// depends_on, readiness and balancers): `cohort start ecosystem.config.js`.
module.exports = {
  apps: [
    {
      name: 'redis',
      script: 'redis-server',
      args: ['--port', '6391', '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      kill_signal: 'SIGTERM',
      readiness: { exec: 'redis-cli -p 6391 ping', interval: '500ms', timeout: '1s', failure_threshold: 1 },
    },
    {
      name: 'api',
      script: './app.js',
      instances: 4,
      exec_mode: 'cluster',
      depends_on: ['redis'],
      depends_timeout: '30s',
      readiness: { http: '/health', port: 3100, initial_delay: '2s', interval: '1s', timeout: '1s', failure_threshold: 3 },
      env: { PORT: '3100', REDIS_URL: 'redis://127.0.0.1:6391', SESSION_STORE: 'redis' },
    },
  ],
  balancers: [{ name: 'edge', listen: '127.0.0.1:8100', upstreams: ['app:api'] }],
};
