// The sign-in and not-found pages: the theme the user chose on the dashboard (or the system's).
const saved = localStorage.getItem("tallyhub-theme");
document.documentElement.dataset.theme = saved || (window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
