// PM2's ecosystem file format, read by cohort unchanged: `cohort start examples/hello/ecosystem.config.js`.
module.exports = {
  apps: [
    {
      name: 'hello',
      script: './app.js',
      instances: 'max',
      exec_mode: 'cluster',
      time: true,
      env: { PORT: 3000, NODE_ENV: 'development' },
      env_production: { NODE_ENV: 'production' },
    },
  ],
};
