// The admin pages: in the channel form, only the chosen platform's fieldset is shown and
// submitted (without this script every fieldset shows; the server reads only the chosen one).
const select = document.getElementById("channel-platform");
if (select) {
  const sync = () => {
    for (const fieldset of document.querySelectorAll("fieldset[data-platform]")) {
      const chosen = fieldset.dataset.platform === select.value;
      fieldset.hidden = !chosen;
      fieldset.disabled = !chosen;
    }
  };
  select.addEventListener("change", sync);
  sync();
}
