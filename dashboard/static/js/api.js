// The dashboard's JSON API (docs/dashboard-api.md): GET with the page's query, errors as exceptions.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function get(path, params) {
  const response = await fetch(`${path}?${new URLSearchParams(params)}`, {
    headers: { accept: "application/json" }, credentials: "same-origin",
  });
  return answer(response);
}

export async function put(path, body) {
  const response = await fetch(path, {
    method: "PUT", credentials: "same-origin",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify(body),
  });
  return answer(response);
}

export function csvLink(path, params, table) {
  return `${path}?${new URLSearchParams({ ...params, format: "csv", table })}`;
}

async function answer(response) {
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (response.status === 401) {
    window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname + window.location.search)}`);
    throw new ApiError(401, "signed out");
  }
  if (!response.ok) throw new ApiError(response.status, (body && body.error) || `HTTP ${response.status}`);
  return body;
}
