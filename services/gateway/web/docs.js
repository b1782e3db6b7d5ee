// The API reference at /docs: /openapi.json rendered by the Swagger UI this gateway serves itself
// (vendored from the npm package swagger-ui-dist, pinned in scripts/vendor-docs-ui.sh). No inline
// script (the page's Content-Security-Policy forbids it), and nothing is fetched from elsewhere:
// the online validator badge is off.
window.SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#docs',
  deepLinking: true,
  validatorUrl: null,
  defaultModelsExpandDepth: 0,
});
