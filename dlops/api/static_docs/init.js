// Swagger UI over this service's own schema. A file, not an inline script: the page's
// Content-Security-Policy allows scripts from this origin only.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "docs.json", // relative: the same schema from / and from /docs
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout", // no top bar with a URL box: this page documents this service only
    // Swagger UI would otherwise send the schema to validator.swagger.io for its badge.
    validatorUrl: null,
    tryItOutEnabled: false,
    displayRequestDuration: true,
  });
});
